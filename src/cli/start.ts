/**
 * `concord start [--config <file>]`: runs one node in the foreground until SIGINT/SIGTERM
 * (or, when started by `concord cluster up`, until that parent goes away — so a killed
 * parent leaves no orphans).
 */
import { loadConfig } from '../server/config.ts';
import { startFlags } from './start-flags.ts';
import { TcNode } from '../server/tc-node.ts';
import { createTcNodeOptions } from '../server/tc/index.ts';
import { ConfigError } from '../shared/errors.ts';
import { createLogger } from '../shared/logger.ts';

/** How long a stopping node may take before the process exits anyway, in ms. */
export const SHUTDOWN_GRACE_MS = 8_000;

export async function runStart(
  configPath: string | null,
  opts: { logLevel?: string; set?: string[] } = {},
): Promise<void> {
  let config;
  try {
    config = loadConfig(configPath, process.env, process.cwd(), startFlags(opts));
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`concord: invalid config ${configPath ?? '(no file)'}: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger({ name: 'concord', level: config.log.level });

  let node: TcNode | null = null;
  let exiting = false;
  const exit = (code: number, reason: string) => {
    if (exiting) return;
    exiting = true;
    logger.info({ reason }, 'shutting down');
    const hard = setTimeout(() => {
      logger.warn({ graceMs: SHUTDOWN_GRACE_MS }, 'shutdown took too long; exiting');
      process.exit(code || 1);
    }, SHUTDOWN_GRACE_MS);
    hard.unref();
    void (node?.stop() ?? Promise.resolve()).finally(() => {
      logger.flush?.();
      process.exit(code);
    });
  };

  process.on('SIGINT', () => exit(0, 'SIGINT'));
  process.on('SIGTERM', () => exit(0, 'SIGTERM'));
  // Started by `concord cluster up` with an IPC channel: when the parent dies, so do we.
  if (process.send !== undefined)
    process.on('disconnect', () => exit(0, 'parent process went away'));

  try {
    // raft mode: the coordinator's state machine under the Raft; db mode: the db session
    // store (no Raft, no local data); the TC gRPC service on top (src/server/tc).
    node = await TcNode.start({
      ...createTcNodeOptions(config, logger),
      onFatal: () => exit(1, 'raft node fail-stopped'),
    });
  } catch (err) {
    logger.fatal({ err }, 'could not start the node');
    console.error(`concord: node ${config.node.id} could not start: ${(err as Error).message}`);
    process.exit(1);
  }
  if (process.connected)
    process.send?.({ type: 'started', nodeId: config.node.id, httpPort: node.httpPort });
}
