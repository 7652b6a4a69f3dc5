/**
 * A chaos client process: `node --import tsx chaos/client.ts`, started by the harness
 * (chaos/clients.ts) with its settings as JSON in CHAOS_CLIENT_CONFIG and an IPC channel.
 *
 * Protocol (IPC messages):
 *   client → harness  {type: 'ready'}    the SDK found the leader; the workload runs
 *   harness → client  {type: 'drain'}    start no new transaction, finish the ones in flight,
 *                                        keep serving phase two on the RM channel
 *   client → harness  {type: 'drained', counters}
 *   harness → client  {type: 'exit'}     close the SDK (it waits for phase two in progress), exit 0
 * The channel closing (the harness died) exits at once: the process must never outlive
 * its run. SIGKILL (the client-kill nemesis) ends it mid-transaction, which is the point.
 */
import { TcClient } from '../src/client/tc-client.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createPool, type ChaosTables } from './db.ts';
import { HistoryWriter } from './history.ts';
import { Prng } from '../test/support/prng.ts';
import { LOCK_RESOURCE, Workload, type Sabotage } from './workload.ts';

export interface ClientConfig {
  index: number;
  incarnation: number;
  /** `c<index>.<incarnation>`: the history's process name. */
  process: string;
  applicationId: string;
  servers: string[];
  seed: number;
  concurrency: number;
  txnTimeoutMs: number;
  historyFile: string;
  tables: ChaosTables;
  logLevel: string;
  sabotage: Sabotage | null;
}

/** PostgreSQL connections per client process: one per loop, plus phase two running in parallel. */
const POOL_SIZE_EXTRA = 4;

/** The workload's pool, and the XA data source's own (see WorkloadOptions.xaPool). */
function poolsFor(
  config: ClientConfig,
): [ReturnType<typeof createPool>, ReturnType<typeof createPool>] {
  const size = config.concurrency + POOL_SIZE_EXTRA;
  return [createPool(size), createPool(size)];
}

async function main(): Promise<void> {
  const raw = process.env.CHAOS_CLIENT_CONFIG;
  if (!raw)
    throw new Error('CHAOS_CLIENT_CONFIG is not set: this process is started by the chaos harness');
  const config = JSON.parse(raw) as ClientConfig;
  const logger = createLogger({ name: `chaos-${config.process}`, level: config.logLevel });
  const history = new HistoryWriter(config.historyFile, {
    process: config.process,
    app: config.applicationId,
  });
  const [pool, xaPool] = poolsFor(config);
  // The low-level client for lock branches, and a raw RM channel answering their phase two.
  const tc = new TcClient({ seeds: config.servers, logger });
  const lockClientId = `${config.applicationId}:${config.process}:locks`;
  tc.openRmChannel({
    applicationId: config.applicationId,
    transactionServiceGroup: 'default_tx_group',
    clientId: lockClientId,
    resourceIds: () => [LOCK_RESOURCE],
    handler: async (r) => (r.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked'),
  });
  const workload = new Workload({
    process: config.process,
    applicationId: config.applicationId,
    servers: config.servers,
    pool,
    xaPool,
    tables: config.tables,
    history,
    rnd: new Prng(config.seed).fork(`client-${config.process}`),
    concurrency: config.concurrency,
    txnTimeoutMs: config.txnTimeoutMs,
    logger,
    tc,
    lockClientId,
    sabotage: config.sabotage,
  });

  let exiting = false;
  const exit = async (code: number, why: string) => {
    if (exiting) return;
    exiting = true;
    logger.info({ why }, 'client exiting');
    try {
      await workload.close();
      await tc.close();
    } catch (err) {
      logger.warn({ err }, 'client close failed');
    }
    history.close();
    for (const p of [pool, xaPool]) await p.end().catch(() => undefined);
    process.exit(code);
  };

  process.on('disconnect', () => {
    // The harness is gone: leave at once, without draining.
    history.close();
    process.exit(1);
  });
  process.on('SIGTERM', () => void exit(0, 'SIGTERM'));
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'drain') {
      void workload
        .drain()
        .then(() => process.send?.({ type: 'drained', counters: workload.counters }));
    } else if (m?.type === 'exit') {
      void exit(0, 'asked to exit');
    }
  });

  await workload.connect();
  workload.start();
  logger.info({ process: config.process, app: config.applicationId }, 'client ready');
  process.send?.({ type: 'ready' });
}

main().catch((err) => {
  console.error(`chaos client failed: ${(err as Error)?.stack ?? String(err)}`);
  process.exit(1);
});
