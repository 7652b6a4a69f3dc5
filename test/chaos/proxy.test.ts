/**
 * The fault proxy: forwards, cuts (RST), black-holes, tells sources apart by their first
 * bytes — and, with the real Raft gRPC transport behind it, cuts exactly one link.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { FaultProxy, FaultTable, isLoopback, raftSenderSniffer } from '../../chaos/proxy.ts';
import type { Message, NodeId } from '../../src/raft/core/types.ts';
import { nid } from '../support/node-id.ts';
import { GrpcTransport } from '../../src/raft/transport/grpc-transport.ts';
import { eventually as eventuallyWithin, sleep } from '../support/wait.ts';

const logger = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => {
    s.on('data', (d) => s.write(d));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as { port: number }).port };
}

async function proxyTo(
  port: number,
  table: FaultTable,
  dst = 'b',
  identify?: (buf: Buffer, dst: string) => string | null,
): Promise<FaultProxy> {
  const p = new FaultProxy({
    name: `${dst}.test`,
    dst,
    listen: { host: '127.0.0.1', port: 0 },
    target: { host: '127.0.0.1', port },
    table,
    logger,
    ...(identify ? { identify } : {}),
  });
  await p.listen();
  cleanups.push(() => p.close());
  return p;
}

function client(port: number): Promise<{
  sock: Socket;
  received: () => string;
  closed: () => { closed: boolean; error: string | null };
}> {
  return new Promise((resolve, reject) => {
    let got = '';
    let closed = false;
    let error: string | null = null;
    const sock = connect(port, '127.0.0.1', () =>
      resolve({ sock, received: () => got, closed: () => ({ closed, error }) }),
    );
    sock.on('data', (d) => (got += d.toString()));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
      reject(e);
    });
    sock.on('close', () => (closed = true));
    cleanups.push(() => void sock.destroy());
  });
}

/** Retries the assertion, for up to 5 s unless told. */
const eventually = (check: () => void, timeoutMs = 5_000) => eventuallyWithin(check, timeoutMs);

/** A test identifier: the first line a client sends is `hello <id>`. */
const helloSniffer = (buf: Buffer): string | null =>
  /^hello (\w+)\n/.exec(buf.toString('latin1'))?.[1] ?? null;

describe('FaultTable', () => {
  it('applies the most severe matching rule, and only `*` rules to an unidentified source', () => {
    const t = new FaultTable();
    expect(t.modeOf('a', 'b')).toBe('ok');
    t.set('a', 'b', 'blackhole');
    expect(t.modeOf('a', 'b')).toBe('blackhole');
    expect(t.modeOf('c', 'b')).toBe('ok');
    expect(t.modeOf(null, 'b')).toBe('ok');
    t.isolate('b', 'cut');
    expect(t.modeOf('a', 'b')).toBe('cut');
    expect(t.modeOf(null, 'b')).toBe('cut');
    expect(t.modeOf('b', 'c')).toBe('cut');
    expect(t.modeOf('a', 'c')).toBe('ok');
    t.heal();
    expect(t.modeOf('a', 'b')).toBe('ok');
    expect(t.describe()).toEqual({});
  });
});

describe('FaultProxy', () => {
  it('refuses anything but loopback', () => {
    expect(isLoopback('127.0.0.2')).toBe(true);
    expect(isLoopback('10.0.0.1')).toBe(false);
    expect(
      () =>
        new FaultProxy({
          name: 'x',
          dst: 'b',
          listen: { host: '0.0.0.0', port: 0 },
          target: { host: '127.0.0.1', port: 1 },
          table: new FaultTable(),
          logger,
        }),
    ).toThrow(/loopback/);
  });

  it('forwards both ways while the link is ok', async () => {
    const { port } = await echoServer();
    const p = await proxyTo(port, new FaultTable());
    const c = await client(p.port);
    c.sock.write('ping');
    await eventually(() => expect(c.received()).toBe('ping'));
    expect(p.stats.forwardedBytes).toBeGreaterThanOrEqual(8);
  });

  it('cut resets open connections of the link and every new one', async () => {
    const { port } = await echoServer();
    const table = new FaultTable();
    const p = await proxyTo(port, table);
    const c = await client(p.port);
    c.sock.on('error', () => undefined);
    table.isolate('b', 'cut');
    await eventually(() => expect(c.closed().closed).toBe(true));
    expect(p.stats.reset).toBe(1);
    // A new connection is accepted by the kernel and reset at once.
    const c2 = await client(p.port).catch(() => null);
    if (c2) {
      c2.sock.on('error', () => undefined);
      await eventually(() => expect(c2.closed().closed).toBe(true));
    }
    table.heal();
    const c3 = await client(p.port);
    c3.sock.write('again');
    await eventually(() => expect(c3.received()).toBe('again'));
  });

  it('black-hole drops bytes both ways but keeps the connection; heal lets them through again', async () => {
    const { port } = await echoServer();
    const table = new FaultTable();
    const p = await proxyTo(port, table);
    const c = await client(p.port);
    table.set('*', 'b', 'blackhole');
    c.sock.write('lost');
    await sleep(200);
    expect(c.received()).toBe('');
    expect(c.closed().closed).toBe(false);
    expect(p.stats.droppedBytes).toBe(4);
    table.heal();
    c.sock.write('found');
    await eventually(() => expect(c.received()).toBe('found'));
  });

  it('tells sources apart by their first bytes and cuts only the named link', async () => {
    const { port } = await echoServer();
    const table = new FaultTable();
    const p = await proxyTo(port, table, 'b', helloSniffer);
    const a = await client(p.port);
    const c = await client(p.port);
    a.sock.on('error', () => undefined);
    a.sock.write('hello a\n');
    c.sock.write('hello c\n');
    await eventually(() => expect(p.connectionsBySource()).toEqual({ a: 1, c: 1 }));
    table.set('a', 'b', 'cut');
    await eventually(() => expect(a.closed().closed).toBe(true));
    c.sock.write('still');
    await eventually(() => expect(c.received()).toBe('hello c\nstill'));
    // A new connection from a is identified by its first chunk and reset before anything passes.
    const a2 = await client(p.port);
    a2.sock.on('error', () => undefined);
    a2.sock.write('hello a\nsecret');
    await eventually(() => expect(a2.closed().closed).toBe(true));
    expect(a2.received()).toBe('');
  });
});

describe('raft link partitions through the proxy', () => {
  const heartbeat = (from: NodeId, to: NodeId, term: number): Message => ({
    type: 'heartbeat',
    from,
    to,
    term,
    commit: 0,
    readCtx: null,
  });

  it('identifies Raft transport streams by sender and cuts exactly one link', async () => {
    const ids = ['a', 'b', 'c'];
    const table = new FaultTable();
    const mk = async (id: NodeId) => {
      const t = new GrpcTransport({
        id,
        listenAddress: '127.0.0.1:0',
        logger,
        limits: { reconnectBaseMs: 20, reconnectMaxMs: 100, connectTimeoutMs: 500 },
      });
      await t.start();
      cleanups.push(() => t.close());
      return t;
    };
    const [a, b, c] = [await mk(nid('a')), await mk(nid('b')), await mk(nid('c'))];
    const proxyB = await proxyTo(
      b.port!,
      table,
      'b',
      raftSenderSniffer(() => ids),
    );
    const viaProxy = `127.0.0.1:${proxyB.port}`;
    a.setPeers(
      new Map([
        [nid('b'), viaProxy],
        [nid('c'), `127.0.0.1:${c.port}`],
      ]),
    );
    c.setPeers(
      new Map([
        [nid('b'), viaProxy],
        [nid('a'), `127.0.0.1:${a.port}`],
      ]),
    );
    b.setPeers(
      new Map([
        [nid('a'), `127.0.0.1:${a.port}`],
        [nid('c'), `127.0.0.1:${c.port}`],
      ]),
    );
    const atB: Message[] = [];
    b.onMessage((m) => atB.push(m));
    const countFrom = (id: string) => atB.filter((m) => m.from === id).length;

    a.send([heartbeat(nid('a'), nid('b'), 1)]);
    c.send([heartbeat(nid('c'), nid('b'), 1)]);
    await eventually(() => expect([countFrom('a'), countFrom('c')]).toEqual([1, 1]));
    expect(proxyB.connectionsBySource()).toEqual({ a: 1, c: 1 });

    table.set('a', 'b', 'cut');
    await sleep(100);
    const before = countFrom('a');
    for (let i = 0; i < 10; i++) {
      a.send([heartbeat(nid('a'), nid('b'), 2)]);
      c.send([heartbeat(nid('c'), nid('b'), 2)]);
      await sleep(30);
    }
    await eventually(() => expect(countFrom('c')).toBeGreaterThanOrEqual(5));
    expect(countFrom('a')).toBe(before);

    table.heal();
    await eventually(() => {
      a.send([heartbeat(nid('a'), nid('b'), 3)]);
      expect(atB.some((m) => m.from === 'a' && m.term === 3)).toBe(true);
    }, 10_000);
  });
});
