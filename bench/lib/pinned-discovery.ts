/**
 * A discovery client pinned to one node, for db mode, where every node serves every TC
 * call: a TcClient given `new PinnedDiscovery(node)` sends all its calls to that node's TC
 * port, never asks the metadata and never follows a leader, the way Seata's clients spread
 * a db-mode cluster's load over its nodes. (The TcClient itself routes TM calls by the
 * metadata's leader — the driver-lease holder in db mode — which puts every TM call on one
 * node; its RM channels go to every node.) Used by bench/tps.ts and test/tc/db-mode.test.ts.
 *
 *   const d = new PinnedDiscovery({ nodeId: 'pg-node2', transaction: { host, port: 8192 }, control:
 *   { host, port: 7192 } });
 *   const tc = new TcClient({ discovery: d });   // close both when done
 */
import { ClusterDiscovery, type LeaderEndpoint } from '../../src/client/discovery.ts';
import {
  UnavailableError,
  formatHostPort,
  type ClusterMetadata,
  type HostPort,
} from '../../src/client/http-metadata.ts';

export interface PinnedNode {
  nodeId: string;
  transaction: HostPort;
  control: HostPort;
}

export class PinnedDiscovery extends ClusterDiscovery {
  private readonly node: LeaderEndpoint;

  constructor(node: PinnedNode, group = 'default') {
    super({ seeds: [formatHostPort(node.control)], group, watch: false });
    this.node = {
      nodeId: node.nodeId,
      transaction: node.transaction,
      control: node.control,
      term: 0,
    };
  }

  override start(): Promise<ClusterMetadata> {
    return this.refresh();
  }

  /** The node's own view is never asked: one fixed answer, so nothing ever moves the client. */
  override refresh(): Promise<ClusterMetadata> {
    if (this.closed) return Promise.reject(new UnavailableError('discovery is closed'));
    return Promise.resolve({
      storeMode: 'db',
      group: this.group,
      term: 0,
      leaderId: this.node.nodeId,
      metadataVersion: 'pinned',
      answeredBy: this.node.nodeId,
      commitIndex: 0,
      appliedIndex: 0,
      lastIndex: 0,
      nodes: [
        {
          group: this.group,
          nodeId: this.node.nodeId,
          role: 'LEADER',
          term: 0,
          control: this.node.control,
          transaction: this.node.transaction,
          internal: null,
          healthy: null,
          version: null,
        },
      ],
    });
  }

  override leader(): LeaderEndpoint {
    return this.node;
  }

  override waitForLeader(): Promise<LeaderEndpoint> {
    if (this.closed) return Promise.reject(new UnavailableError('discovery is closed'));
    return Promise.resolve(this.node);
  }

  override reportUnreachable(): void {}

  override reportNotLeader(): void {}
}
