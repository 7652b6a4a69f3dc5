/**
 * The HTTP face of an RM service that a test runs as a child process (test/sdk/fixtures,
 * test/tc/fixtures): each request runs one branch in the caller's transaction (the xid taken
 * from the TX_XID header) and answers `{ xid, branchId }` (500 with the message on failure);
 * `READY <port>` on stdout once listening; SIGTERM closes the client, then `onClose`, then
 * exits.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { currentXid, wrapHttpHandler } from '../../src/index.ts';

export async function serveRmFixture(
  client: { connect(): Promise<void>; close(): Promise<void> },
  branch: (req: IncomingMessage) => Promise<string>,
  onClose: () => Promise<void> = async () => {},
): Promise<void> {
  const server = createServer(
    wrapHttpHandler(async (req, res) => {
      try {
        const branchId = await branch(req);
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ xid: currentXid(), branchId }));
      } catch (err) {
        res.writeHead(500).end(String((err as Error).message));
      }
    }),
  );
  await client.connect();
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`READY ${typeof address === 'object' && address ? address.port : 0}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    void client
      .close()
      .then(onClose)
      .then(() => process.exit(0));
  });
}
