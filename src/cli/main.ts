/**
 * The `concord` command line (bin/concord.js runs its compiled form, dist/cli/main.js).
 *
 *   concord start --config <file>                  run one node
 *   concord cluster up [--dir cluster-configs] [--pattern node]   run the local cluster in the
 *   foreground
 *   concord cluster status --server <host:port>    members, roles, term, lag  [--json]
 *   concord cluster change --server … --members … --token …
 *   concord cluster transfer --server … --to <nodeId> --token …
 *
 * Errors print one line naming what was wrong and exit non-zero (2: bad input or config,
 * 1: the operation failed).
 */
import { Command, CommanderError } from 'commander';
import { ConcordError } from '../shared/errors.ts';
import { CONCORD_VERSION } from '../server/version.ts';
import { runChange, runStatus, runTransfer } from './cluster-ops.ts';
import { runClusterUp } from './cluster-up.ts';
import { runStart } from './start.ts';
import { INSECURE_ENV } from '../server/security/config.ts';

function fail(err: unknown): never {
  if (err instanceof ConcordError) {
    console.error(`concord: ${err.message}`);
    process.exit(err.code === 'BAD_REQUEST' || err.code === 'CONFIG_INVALID' ? 2 : 1);
  }
  console.error(`concord: ${(err as Error)?.stack ?? String(err)}`);
  process.exit(1);
}

const action =
  <A extends unknown[]>(fn: (...args: A) => Promise<void>) =>
  async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    }
  };

export function buildProgram(): Command {
  const program = new Command('concord')
    .description('Concord: a distributed-transaction coordinator on its own Raft')
    .version(CONCORD_VERSION)
    .showHelpAfterError()
    // Usage errors exit 2 (subcommands inherit this: it is set before they are created).
    .exitOverride((err: CommanderError) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  program
    .command('start')
    .description('run one node in the foreground')
    .requiredOption('-c, --config <file>', 'node config (YAML)')
    .option(
      '--log-level <level>',
      'overrides log.level (fatal, error, warn, info, debug, trace, silent)',
    )
    .option('--insecure', 'plaintext on every port, no client authentication (CONCORD_INSECURE=1)')
    .action(
      action(async (o: { config: string; logLevel?: string; insecure?: boolean }) => {
        if (o.insecure) process.env[INSECURE_ENV] = '1';
        return runStart(o.config, { ...(o.logLevel ? { logLevel: o.logLevel } : {}) });
      }),
    );

  const cluster = program.command('cluster').description('run and operate a cluster');

  cluster
    .command('up')
    .description(
      'start every node<N>.yaml (or <pattern><N>.yaml) of a directory as child processes; Ctrl-C stops them all',
    )
    .option('-d, --dir <dir>', 'directory of node configs', 'cluster-configs')
    .option(
      '-p, --pattern <prefix>',
      'config file-name prefix: starts <prefix><N>.yaml (db mode: db-pg-node, db-mysql-node)',
      'node',
    )
    .option('-v, --verbose', "show the nodes' logs here instead of in files", false)
    .option('--insecure', 'plaintext on every port, no client authentication (CONCORD_INSECURE=1)')
    .action(
      action(async (o: { dir: string; pattern: string; verbose: boolean; insecure?: boolean }) => {
        // The children inherit it.
        if (o.insecure) process.env[INSECURE_ENV] = '1';
        return runClusterUp({ dir: o.dir, pattern: o.pattern, verbose: o.verbose });
      }),
    );

  const server = ['-s, --server <host:port>', "any node's HTTP (openapi) address"] as const;
  const group = ['-g, --group <group>', 'Raft group', 'default'] as const;
  const token = [
    '-t, --token <token>',
    'bearer token (default: $CONCORD_HTTP_AUTH_TOKEN)',
  ] as const;

  cluster
    .command('status')
    .description('print members, roles, term and replication lag')
    .requiredOption(...server)
    .option(...group)
    .option('--json', 'print the metadata as JSON', false)
    .action(action(async (o: { server: string; group: string; json: boolean }) => runStatus(o)));

  cluster
    .command('change')
    .description(
      'change the membership to the given members (added as learners, promoted when caught up; removals one at a time, the leader last)',
    )
    .requiredOption(...server)
    .option(
      '-m, --members <list>',
      'desired members: "node1,node2,node4@127.0.0.1:9094:8094:7094" (id, or id@host:raftPort:tcPort:httpPort for a new node)',
    )
    .option(
      '--raft-cluster-str <list>',
      "Seata's form: raft addresses host:port,host:port of current members",
    )
    .option(...token)
    .option(...group)
    .option('--json', 'print the answer as JSON', false)
    .action(
      action(
        async (o: {
          server: string;
          members?: string;
          raftClusterStr?: string;
          token?: string;
          group: string;
          json: boolean;
        }) => runChange(o),
      ),
    );

  cluster
    .command('transfer')
    .description('hand leadership to another voter')
    .requiredOption(...server)
    .requiredOption('--to <nodeId>', 'the voter to lead')
    .option(...token)
    .option(...group)
    .option('--json', 'print the resulting metadata as JSON', false)
    .action(
      action(
        async (o: { server: string; to: string; token?: string; group: string; json: boolean }) =>
          runTransfer(o),
      ),
    );

  return program;
}

await buildProgram().parseAsync(process.argv);
