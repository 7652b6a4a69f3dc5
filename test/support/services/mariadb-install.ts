/**
 * The MariaDB binaries for a private server: the machine's own, or Debian's `mariadb-server`
 * package installed with apt when we are root on Debian. Installing must not leave a system
 * server running, so the package's services are kept from starting (policy-rc.d).
 */
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import {
  findBinary,
  isDebian,
  isRoot,
  progress,
  run,
  seconds,
  SYSTEM_SEARCH,
  tail,
  type BinarySearch,
} from './host.ts';

export interface MariadbBinaries {
  server: string;
  installDb: string;
}

/** The one command that gets the binaries onto this machine. */
export const MARIADB_FIX =
  (isDebian()
    ? 'sudo apt-get install -y mariadb-server'
    : process.platform === 'darwin'
      ? 'brew install mariadb'
      : "install your system's MariaDB server package (mariadbd, mariadb-install-db)") +
  ', or point MYSQL_HOST/MYSQL_PORT/... at a server';

export function findMariadb(where: BinarySearch = SYSTEM_SEARCH): MariadbBinaries | undefined {
  const server = findBinary(['mariadbd'], where);
  const installDb = findBinary(['mariadb-install-db'], where);
  return server && installDb ? { server, installDb } : undefined;
}

const POLICY_RC_D = '/usr/sbin/policy-rc.d';
const APT_ENV = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
const APT_INSTALL = ['install', '-y', '--no-install-recommends', 'mariadb-server'];

/** The binaries, installed first if needed and possible; throws with the fix otherwise. */
export async function installMariadb(
  where: BinarySearch = SYSTEM_SEARCH,
  root = isRoot(),
): Promise<MariadbBinaries> {
  const found = findMariadb(where);
  if (found) return found;
  const apt = findBinary(['apt-get'], where);
  if (!root || !isDebian() || !apt)
    throw new Error(
      'no mariadbd and mariadb-install-db to start a private server with, and ' +
        (isDebian() ? 'not root, so no apt-get install' : 'no Debian apt-get to install them'),
    );
  const started = Date.now();
  progress("MariaDB: not installed; installing Debian's mariadb-server with apt-get");
  // Keep the package from starting the system service (exit 101: action forbidden).
  const ownPolicy = !existsSync(POLICY_RC_D);
  if (ownPolicy) await writeFile(POLICY_RC_D, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    let result = await run(apt, APT_INSTALL, { env: APT_ENV, show: true });
    if (result.code !== 0) {
      progress(
        'MariaDB: install failed; refreshing the package lists (apt-get update) and retrying',
      );
      await run(apt, ['update'], { env: APT_ENV, show: true });
      result = await run(apt, APT_INSTALL, { env: APT_ENV, show: true });
    }
    if (result.code !== 0)
      throw new Error(`apt-get ${APT_INSTALL.join(' ')} failed:\n${tail(result.output)}`);
  } finally {
    if (ownPolicy) await rm(POLICY_RC_D, { force: true });
  }
  progress(`MariaDB: mariadb-server installed in ${seconds(started)}`);
  const installed = findMariadb();
  if (!installed) throw new Error('MariaDB: mariadb-server installed, yet mariadbd is not found');
  return installed;
}
