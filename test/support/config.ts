/** The smallest raw node config `validateConfig` accepts: one node, node1, on the given host. */
export const minimalConfig = (host = '127.0.0.1') => ({
  node: { id: 'node1' },
  server: { host, advertiseHost: '127.0.0.1', httpPort: 7091, tcPort: 8091, raftPort: 9091 },
  raft: {
    dataDir: './data/node1',
    peers: [{ nodeId: 'node1', host: '127.0.0.1', raftPort: 9091, tcPort: 8091, httpPort: 7091 }],
  },
});
