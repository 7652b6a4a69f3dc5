/**
 * The TcPort over the typed TC gRPC client (src/client/tc-client.ts): leader discovery from
 * the servers' HTTP metadata, safe retries (request ids for Begin and BranchRegister,
 * idempotent commit/rollback), and the RM channel that follows the leader. The two speak
 * the same status and branch-type names, so the adapter only narrows the surface.
 */
import type { Logger } from '../../shared/logger.ts';
import { TcClient } from '../tc-client.ts';
import type { TcPort } from './tc-port.ts';

export interface TcPortOptions {
  /** HTTP control endpoints of any nodes ("host:port"). */
  servers: string[];
  group: string;
  logger: Logger;
}

/** A TcPort with an eager connect (finding the leader now instead of on the first call). */
export type ConnectableTcPort = TcPort & { connect(): Promise<void> };

export function tcPortOf(tc: TcClient): ConnectableTcPort {
  return {
    connect: () => tc.start(),
    begin: (args) => tc.begin(args),
    commit: (xid, options) => tc.commit(xid, options),
    rollback: (xid) => tc.rollback(xid),
    getStatus: (xid, options) => tc.getStatus(xid, options),
    globalReport: (xid, status) => tc.globalReport(xid, status),
    branchRegister: (args) => tc.branchRegister(args),
    branchReport: (args) => tc.branchReport(args),
    openRmChannel: (args) => tc.openRmChannel(args),
    close: () => tc.close(),
  };
}

export function createTcPort(options: TcPortOptions): ConnectableTcPort {
  return tcPortOf(
    new TcClient({ seeds: options.servers, group: options.group, logger: options.logger }),
  );
}
