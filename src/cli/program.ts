/**
 * The `concord` command line's commands and flags (main.ts runs it; bin/concord.js runs its
 * compiled form, dist/cli/main.js). Importing this file runs nothing.
 *
 *   concord start [--config <file>] [--set key=value] [--insecure]   run one node
 *   concord cluster up [--dir cluster-configs] [--pattern node]   run the local cluster in the
 *   foreground
 *   concord cluster status --server <host:port>    members, roles, term, lag  [--json]
 *   (the commands that name --server reach its HTTPS port trusting --pki <dir>'s ca.pem,
 *   $CONCORD_TLS_CA / $CONCORD_TLS_DIR, or ./data/pki; --insecure: plain HTTP)
 *   concord cluster change --server … --members … --token … [--dry-run] [--yes]
 *   concord cluster add <id@host:raftPort:tcPort:httpPort> --server … --token … [--dry-run]
 *   concord cluster remove <nodeId> --server … --token … [--dry-run] [--yes]
 *   concord cluster transfer --server … --to <nodeId> --token …
 *   concord tx list --server … [--status S] [--app A] [--older-than 10m] [--stuck] [--json]
 *   concord tx show <xid> --server …
 *   concord tx retry|stop|resume|resolve <xid> --server … [--yes] [--operator name]
 *     [--pki <dir> | --insecure]   (the TC's operator calls need the admin credential)
 *
 * Errors print one line naming what was wrong and exit non-zero (2: bad input or config,
 * 1: the operation failed).
 */
import { Command, CommanderError } from 'commander';
import { ConcordError } from '../shared/errors.ts';
import { CONCORD_VERSION } from '../server/version.ts';
import {
  runAdd,
  runChange,
  runRemove,
  runStatus,
  runTransfer,
  type ChangeOptions,
} from './cluster-ops.ts';
import { runClusterUp } from './cluster-up.ts';
import { runStart } from './start.ts';
import { CONFIG_FILE_ENV } from '../server/config/keys.ts';
import { INSECURE_ENV } from '../server/security/config.ts';
import { runTxAction, runTxList, runTxShow, type TxAction } from './tx.ts';

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

const server = ['-s, --server <host:port>', "any node's HTTP (openapi) address"] as const;
const group = ['-g, --group <group>', 'Raft group', 'default'] as const;
const token = ['-t, --token <token>', 'bearer token (default: $CONCORD_HTTP_AUTH_TOKEN)'] as const;

/** Whom to trust on the node's HTTPS port (src/cli/operator-tls.ts cliHttpTls). */
const pkiCa = [
  '--pki <dir>',
  "trust <dir>/ca.pem on the node's HTTPS port (default: $CONCORD_TLS_CA, $CONCORD_TLS_DIR, or ./data/pki)",
] as const;
const insecureHttp = [
  '--insecure',
  'plain HTTP, for a cluster in insecure mode (CONCORD_INSECURE=1)',
] as const;

const dryRun = ['--dry-run', 'print the plan and change nothing', false] as const;
const yes = ['-y, --yes', 'do not ask before removing a voter', false] as const;

export function buildProgram(): Command {
  const program = new Command('concord')
    .description('Concord: a distributed-transaction coordinator on its own Raft')
    .version(CONCORD_VERSION)
    .showHelpAfterError()
    // Usage errors exit 2 (subcommands inherit this: it is set before they are created).
    .exitOverride((err: CommanderError) => {
      process.exit(err.exitCode === 0 ? 0 : 2);
    });

  addStartCommand(program);
  const cluster = program.command('cluster').description('run and operate a cluster');
  addClusterRunCommands(cluster);
  addMembershipCommands(cluster);
  const tx = program
    .command('tx')
    .description('find and handle global transactions (list, show, retry, stop, resume, resolve)');
  addTxReadCommands(tx);
  addTxActionCommands(tx);
  return program;
}

/** `concord start`: one node in the foreground. */
function addStartCommand(program: Command): void {
  program
    .command('start')
    .description(
      'run one node in the foreground (config: flags > CONCORD_<KEY> environment > file > defaults)',
    )
    .option('-c, --config <file>', 'node config (YAML; default: $CONCORD_CONFIG, or none)')
    .option(
      '--set <key=value>',
      'set a config key, e.g. --set server.httpPort=7095 (repeatable)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option(
      '--log-level <level>',
      'overrides log.level (fatal, error, warn, info, debug, trace, silent)',
    )
    .option('--insecure', 'plaintext on every port, no client authentication (CONCORD_INSECURE=1)')
    .action(
      action(
        async (o: { config?: string; set: string[]; logLevel?: string; insecure?: boolean }) => {
          if (o.insecure) process.env[INSECURE_ENV] = '1';
          return runStart(o.config ?? (process.env[CONFIG_FILE_ENV] || null), {
            set: o.set,
            ...(o.logLevel ? { logLevel: o.logLevel } : {}),
          });
        },
      ),
    );
}

/** `concord cluster up | status`. */
function addClusterRunCommands(cluster: Command): void {
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

  cluster
    .command('status')
    .description('print members, roles, term and replication lag')
    .requiredOption(...server)
    .option(...group)
    .option(...pkiCa)
    .option(...insecureHttp)
    .option('--json', 'print the metadata as JSON', false)
    .action(action(async (o: Parameters<typeof runStatus>[0]) => runStatus(o)));
}

/** `concord cluster change | add | remove | transfer`. */
function addMembershipCommands(cluster: Command): void {
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
    .option(...pkiCa)
    .option(...insecureHttp)
    .option(...dryRun)
    .option(...yes)
    .option('--json', 'print the answer as JSON', false)
    .action(
      action(
        async (
          o: ChangeOptions & {
            members?: string;
            raftClusterStr?: string;
          },
        ) => runChange(o),
      ),
    );

  addOneNodeCommands(cluster);

  cluster
    .command('transfer')
    .description('hand leadership to another voter')
    .requiredOption(...server)
    .requiredOption('--to <nodeId>', 'the voter to lead')
    .option(...token)
    .option(...group)
    .option(...pkiCa)
    .option(...insecureHttp)
    .option('--json', 'print the resulting metadata as JSON', false)
    .action(action(async (o: Parameters<typeof runTransfer>[0]) => runTransfer(o)));
}

/**
 * `concord cluster add | remove`: one node each, the same options (a plan first, --dry-run,
 * --yes).
 */
function addOneNodeCommands(cluster: Command): void {
  const oneNode: Array<[string, string, string, string, typeof runAdd]> = [
    [
      'add',
      'add a node to the membership: it joins as a learner and becomes a voter once caught up',
      '<node>',
      'the new node: id@host:raftPort:tcPort:httpPort',
      runAdd,
    ],
    [
      'remove',
      'remove a member (the leader last: it steps down); asks first unless --yes',
      '<nodeId>',
      'the member to remove',
      runRemove,
    ],
  ];
  for (const [name, description, argument, argumentHelp, run] of oneNode) {
    cluster
      .command(name)
      .description(description)
      .argument(argument, argumentHelp)
      .requiredOption(...server)
      .option(...token)
      .option(...group)
      .option(...pkiCa)
      .option(...insecureHttp)
      .option(...dryRun)
      .option(...yes)
      .option('--json', 'print the answer as JSON', false)
      .action(action(async (node: string, o: ChangeOptions) => run({ ...o, node })));
  }
}

/** `concord tx list | show`. */
function addTxReadCommands(tx: Command): void {
  tx.command('list')
    .description('list live transactions (filters combine)')
    .requiredOption(...server)
    .option(...token)
    .option(...group)
    .option(...pkiCa)
    .option(...insecureHttp)
    .option('--status <status>', 'only this status, e.g. CommitRetrying, RollbackFailed')
    .option('--app <applicationId>', 'only transactions of this application')
    .option(
      '--older-than <duration>',
      'only transactions begun at least this long ago (30s, 10m, 2h, 1d)',
    )
    .option(
      '--stuck',
      'only stuck transactions: phase two still failing past the alarm time',
      false,
    )
    .option(
      '--stuck-after <duration>',
      "stuck = retrying at least this long (default: still failing past the node's alarm time, 10m after the first failure)",
    )
    .option('--limit <n>', 'print at most this many', '100')
    .option('--json', 'print JSON', false)
    .action(action(async (o: Parameters<typeof runTxList>[0]) => runTxList(o)));

  tx.command('show')
    .description('one transaction: status, retry state, branches and the rows they lock')
    .argument('<xid>', 'the global transaction id')
    .requiredOption(...server)
    .option(...token)
    .option(...group)
    .option(...pkiCa)
    .option(...insecureHttp)
    .option(
      '--stuck-after <duration>',
      "stuck = retrying at least this long (default: still failing past the node's alarm time, 10m after the first failure)",
    )
    .option('--json', 'print JSON', false)
    .action(
      action(async (xid: string, o: Omit<Parameters<typeof runTxShow>[0], 'xid'>) =>
        runTxShow({ ...o, xid }),
      ),
    );
}

/** `concord tx retry | stop | resume | resolve`: each asks first and is audited. */
function addTxActionCommands(tx: Command): void {
  const actions: Array<[TxAction, string]> = [
    ['retry', 'run a phase-two pass now instead of waiting for the backoff'],
    ['stop', 'stop phase-two retries (the status reads Stop*; locks stay held)'],
    [
      'resume',
      'resume a stopped, stuck or failed (*Failed) transaction from where it stopped: only its unfinished branches are told again (past its retry horizon only with --force)',
    ],
    [
      'resolve',
      'end a failed (or retry-stopped) transaction you repaired by hand: releases its locks',
    ],
  ];
  for (const [name, description] of actions) {
    const command = tx
      .command(name)
      .description(`${description}; asks first, audited`)
      .argument('<xid>', 'the global transaction id')
      .requiredOption(...server)
      .option(...group)
      .option('-y, --yes', 'do not ask for confirmation', false)
      .option(
        '--operator <name>',
        'who acts, for the audit line (default: $CONCORD_OPERATOR or user@host)',
      )
      .option(
        '--pki <dir>',
        'the operator credential: <dir>/ca.pem, admin.pem, admin-key.pem (default: $CONCORD_TLS_CA/CERT/KEY, $CONCORD_TLS_DIR, or ./data/pki); ca.pem is trusted on the HTTPS port too',
      )
      .option(
        '--insecure',
        'plaintext TC calls and plain HTTP, for a cluster in insecure mode (CONCORD_INSECURE=1)',
      )
      .option('--json', 'print JSON', false);
    if (name === 'resume')
      command.option(
        '--force',
        'resume although its retry horizon passed: its RMs may have cleaned up their fence rows (a confirm could find no try, a cancel could skip the business cancel); check the branches first',
        false,
      );
    command.action(
      action(
        async (
          xid: string,
          o: {
            server: string;
            group: string;
            yes: boolean;
            operator?: string;
            pki?: string;
            insecure?: boolean;
            json: boolean;
            force?: boolean;
          },
        ) => runTxAction(name, { ...o, xid }),
      ),
    );
  }
}
