import * as grpc from '@grpc/grpc-js';
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import type { Entry, Message, NodeId } from '../../src/raft/core/types.ts';
import { crc32 } from '../../src/raft/storage/crc32.ts';
import { decodeMessage, encodeMessage } from '../../src/raft/transport/codec.ts';
import {
  GrpcTransport,
  identifyPeer,
  raftTransportClient,
  type TransportLimits,
} from '../../src/raft/transport/grpc-transport.ts';
import { PeerIdentityBook } from '../../src/raft/node/identity.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/wait.ts';
import { nid, nids } from '../support/node-id.ts';

/** Byte fields compared by length and checksum (Buffer vs Uint8Array, and fast on megabytes). */
function norm(x: unknown): unknown {
  if (x instanceof Uint8Array) return `bytes:${x.length}:${crc32(x)}`;
  if (Array.isArray(x)) return x.map(norm);
  if (typeof x === 'object' && x !== null)
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, norm(v)]));
  return x;
}

const heartbeat = (from: NodeId, to: NodeId, term: number, commit = 0): Message => ({
  type: 'heartbeat',
  from,
  to,
  term,
  commit,
  readCtx: null,
});

describe('codec', () => {
  it('round-trips every message type', () => {
    const meta = {
      index: 7,
      term: 2,
      conf: { voters: nids('a', 'b'), learners: nids('c'), context: { [nid('a')]: 'x' } },
    };
    const messages: Message[] = [
      {
        type: 'preVote',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        lastLogIndex: 9,
        lastLogTerm: 2,
        transfer: false,
      },
      {
        type: 'vote',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        lastLogIndex: 9,
        lastLogTerm: 2,
        transfer: true,
      },
      { type: 'preVoteResp', from: nid('a'), to: nid('b'), term: 3, reject: true },
      { type: 'voteResp', from: nid('a'), to: nid('b'), term: 3, reject: false },
      {
        type: 'app',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        prevIndex: 4,
        prevTerm: 2,
        commit: 4,
        entries: [
          { index: 5, term: 3, type: 'normal', data: new Uint8Array([1, 2, 3]) },
          { index: 6, term: 3, type: 'conf', change: { type: 'removeNode', nodeId: nid('c') } },
        ],
      },
      {
        type: 'appResp',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        reject: true,
        index: 4,
        hintTerm: 1,
        hintIndex: 2,
      },
      heartbeat(nid('a'), nid('b'), 3),
      { type: 'heartbeatResp', from: nid('a'), to: nid('b'), term: 3, readCtx: 'r1' },
      {
        type: 'snap',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        meta,
        offset: 0,
        chunk: new Uint8Array([9]),
        done: true,
      },
      {
        type: 'snap',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        meta,
        offset: 0,
        chunk: new Uint8Array([9]),
        done: true,
        crc: 0xfedcba98,
      },
      {
        type: 'snapResp',
        from: nid('a'),
        to: nid('b'),
        term: 3,
        reject: false,
        index: 7,
        offset: 1,
      },
      { type: 'timeoutNow', from: nid('a'), to: nid('b'), term: 3 },
    ];
    for (const m of messages) {
      const d = decodeMessage(encodeMessage(m));
      expect(d.ok).toBe(true);
      expect(norm(d.ok && d.message)).toEqual(norm(m));
    }
  });

  it("encodes an append exactly as msgpackr would, reusing each entry's bytes across followers", () => {
    const plain = new Packr({ useRecords: false });
    for (const n of [1, 15, 16, 70_000]) {
      const entries: Entry[] = [];
      for (let i = 0; i < n; i++)
        entries.push({
          index: 10 + i,
          term: 4,
          type: 'normal',
          data: new Uint8Array([i & 0xff, 7]),
        });
      const toB: Message = {
        type: 'app',
        from: nid('a'),
        to: nid('b'),
        term: 4,
        prevIndex: 9,
        prevTerm: 3,
        commit: 9,
        entries,
      };
      const toC: Message = {
        ...toB,
        to: nid('c'),
        prevIndex: 10,
        prevTerm: 4,
        entries: entries.slice(1),
      };
      for (const m of [toB, toC, toB]) {
        const bytes = encodeMessage(m);
        expect(Buffer.compare(bytes, plain.pack(m))).toBe(0);
        const d = decodeMessage(bytes);
        expect(norm(d.ok && d.message)).toEqual(norm(m));
      }
    }
  });

  it('rejects malformed messages with a reason', () => {
    const p = new Packr({ useRecords: false });
    for (const crc of [-1, 2 ** 32, 1.5, '7'])
      expect(
        decodeMessage(
          p.pack({
            type: 'snap',
            ...{ from: 'a', to: 'b', term: 1, offset: 0, chunk: new Uint8Array(1), done: true },
            meta: { index: 1, term: 1, conf: { voters: ['a'], learners: [], context: {} } },
            crc,
          }),
        ),
      ).toMatchObject({ ok: false, error: /snap.crc/ });
    expect(decodeMessage(new Uint8Array([0xc1]))).toMatchObject({ ok: false });
    expect(decodeMessage(p.pack({ type: 'nope', from: 'a', to: 'b', term: 1 }))).toMatchObject({
      ok: false,
      error: /unknown message type/,
    });
    expect(
      decodeMessage(
        p.pack({ type: 'heartbeat', from: 'a', to: 'b', term: -1, commit: 0, readCtx: null }),
      ),
    ).toMatchObject({ ok: false });
    expect(
      decodeMessage(
        p.pack({
          type: 'app',
          from: 'a',
          to: 'b',
          term: 1,
          prevIndex: 0,
          prevTerm: 0,
          commit: 0,
          entries: [{ index: 2, term: 1, type: 'normal', data: new Uint8Array() }],
        }),
      ),
    ).toMatchObject({ ok: false, error: /not contiguous/ });
    expect(
      decodeMessage(
        p.pack({
          type: 'app',
          from: 'a',
          to: 'b',
          term: 1,
          prevIndex: 0,
          prevTerm: 0,
          commit: 0,
          entries: [{ index: 1, term: 1, type: 'normal', data: 'str' }],
        }),
      ),
    ).toMatchObject({ ok: false, error: /data is not bytes/ });
    expect(decodeMessage(p.pack([1, 2, 3]))).toMatchObject({ ok: false });
  });
});

describe('GrpcTransport', () => {
  const transports: GrpcTransport[] = [];
  const cleanups: Array<() => void> = [];

  function transport(id: NodeId, port: number, limits: Partial<TransportLimits> = {}) {
    const t = new GrpcTransport({
      id,
      listenAddress: `127.0.0.1:${port}`,
      logger: silentLogger(),
      limits: { reconnectBaseMs: 20, reconnectMaxMs: 200, connectTimeoutMs: 300, ...limits },
    });
    transports.push(t);
    return t;
  }

  async function pair() {
    const [pa, pb] = [await freePort(), await freePort()];
    const a = transport(nid('a'), pa);
    const b = transport(nid('b'), pb);
    await a.start();
    await b.start();
    const peers = new Map([
      [nid('a'), `127.0.0.1:${pa}`],
      [nid('b'), `127.0.0.1:${pb}`],
    ]);
    a.setPeers(peers);
    b.setPeers(peers);
    return { a, b, pa, pb, peers };
  }

  afterEach(async () => {
    for (const c of cleanups.splice(0)) c();
    for (const t of transports.splice(0)) await t.close();
  });

  it('carries messages both ways, in order, including entries and snapshot chunks', async () => {
    const { a, b } = await pair();
    const atB: Message[] = [];
    const atA: Message[] = [];
    b.onMessage((m) => atB.push(m));
    a.onMessage((m) => atA.push(m));
    const app: Message = {
      type: 'app',
      from: nid('a'),
      to: nid('b'),
      term: 1,
      prevIndex: 0,
      prevTerm: 0,
      commit: 0,
      entries: [{ index: 1, term: 1, type: 'normal', data: new Uint8Array(100_000).fill(7) }],
    };
    const snap: Message = {
      type: 'snap',
      from: nid('a'),
      to: nid('b'),
      term: 1,
      meta: {
        index: 10,
        term: 1,
        conf: { voters: [nid('a'), nid('b')], learners: [], context: {} },
      },
      offset: 0,
      chunk: new Uint8Array(1_000_000).fill(3),
      done: false,
    };
    const sent: Message[] = [app, snap];
    for (let i = 1; i <= 2000; i++) sent.push(heartbeat(nid('a'), nid('b'), 1, i));
    a.send(sent);
    b.send([{ type: 'heartbeatResp', from: nid('b'), to: nid('a'), term: 1, readCtx: 'ctx' }]);
    await eventually(() => expect(atB.length).toBe(sent.length));
    expect(norm(atB)).toEqual(norm(sent));
    await eventually(() =>
      expect(atA).toEqual([{ type: 'heartbeatResp', from: 'b', to: 'a', term: 1, readCtx: 'ctx' }]),
    );
    expect(a.statsSnapshot().dropped.queueFull).toBe(0);
  });

  it('drops messages from senders that are not its peers, and keeps serving', async () => {
    const { a, b, pb } = await pair();
    const atB: Message[] = [];
    b.onMessage((m) => atB.push(m));
    // A stranger that knows b's address but that b does not list.
    const strangerPort = await freePort();
    const c = transport(nid('c'), strangerPort);
    await c.start();
    c.setPeers(new Map([[nid('b'), `127.0.0.1:${pb}`]]));
    c.send([heartbeat(nid('c'), nid('b'), 9)]);
    await eventually(() => expect(b.statsSnapshot().rejected.unknownSender).toBe(1));
    a.send([heartbeat(nid('a'), nid('b'), 1)]);
    await eventually(() => expect(atB).toEqual([heartbeat(nid('a'), nid('b'), 1)]));
    // A sender removed from the peers is dropped from then on.
    b.setPeers(new Map([[nid('b'), `127.0.0.1:${pb}`]]));
    a.send([heartbeat(nid('a'), nid('b'), 2)]);
    await eventually(() => expect(b.statsSnapshot().rejected.unknownSender).toBe(2));
    expect(atB).toHaveLength(1);
  });

  it('refuses and counts frames of another cluster and of a member whose identity changed; Identify says who it is', async () => {
    const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
    const a = transport(nid('a'), pa);
    const b = transport(nid('b'), pb);
    const c = transport(nid('a'), pc); // a second node calling itself "a": the wiped one
    const book = new PeerIdentityBook({}, () => undefined);
    book.setMembers(nids('a', 'b'));
    a.setIdentity({ clusterId: 'c1', nodeUid: 'uid-a' }, new PeerIdentityBook({}, () => {}));
    b.setIdentity({ clusterId: 'c1', nodeUid: 'uid-b' }, book);
    c.setIdentity({ clusterId: 'c1', nodeUid: 'uid-a2' }, new PeerIdentityBook({}, () => {}));
    await Promise.all([a.start(), b.start(), c.start()]);
    const atB: Message[] = [];
    b.onMessage((m) => atB.push(m));
    b.setPeers(new Map([[nid('a'), `127.0.0.1:${pa}`]]));
    a.setPeers(new Map([[nid('b'), `127.0.0.1:${pb}`]]));
    c.setPeers(new Map([[nid('b'), `127.0.0.1:${pb}`]]));

    // The first identity b sees for its member a is remembered ...
    a.send([heartbeat(nid('a'), nid('b'), 1)]);
    await eventually(() => expect(atB).toHaveLength(1));
    expect(book.knownUid(nid('a'))).toBe('uid-a');
    // ... and another node presenting itself as a is refused: its state is not a's.
    c.send([heartbeat(nid('a'), nid('b'), 2)]);
    await eventually(() => expect(b.statsSnapshot().rejected.wrongIdentity).toBe(1));
    expect(atB).toHaveLength(1);

    // A frame of another cluster is refused and counted, whoever sends it.
    const pd = await freePort();
    const d = transport(nid('a'), pd);
    d.setIdentity({ clusterId: 'c2', nodeUid: 'uid-a' }, new PeerIdentityBook({}, () => {}));
    await d.start();
    d.setPeers(new Map([[nid('b'), `127.0.0.1:${pb}`]]));
    d.send([heartbeat(nid('a'), nid('b'), 3)]);
    await eventually(() => expect(b.statsSnapshot().rejected.wrongCluster).toBe(1));
    expect(atB).toHaveLength(1);

    // b keeps serving a.
    a.send([heartbeat(nid('a'), nid('b'), 4)]);
    await eventually(() => expect(atB).toHaveLength(2));

    // Identify: who b is, and the identity it knows the asker by.
    expect(await identifyPeer(`127.0.0.1:${pb}`, nid('a'), 2_000)).toEqual({
      nodeId: 'b',
      clusterId: 'c1',
      nodeUid: 'uid-b',
      knownUid: 'uid-a',
    });
    expect((await identifyPeer(`127.0.0.1:${pb}`, nid('z'), 2_000))?.knownUid).toBe('');
    // A member that leaves the membership is forgotten (it may come back, re-added).
    book.setMembers(nids('b'));
    expect((await identifyPeer(`127.0.0.1:${pb}`, nid('a'), 2_000))?.knownUid).toBe('');
    // Nobody listening: null, quickly.
    expect(await identifyPeer(`127.0.0.1:${await freePort()}`, nid('a'), 2_000)).toBeNull();
  });

  it('drops malformed frames and mislabelled messages without crashing', async () => {
    const { b, pb } = await pair();
    const atB: Message[] = [];
    b.onMessage((m) => atB.push(m));
    const RaftTransport = raftTransportClient();
    const raw = new RaftTransport(
      `127.0.0.1:${pb}`,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & {
      Stream(cb: (err: unknown, res: unknown) => void): grpc.ClientWritableStream<unknown>;
    };
    cleanups.push(() => raw.close());
    const done = new Promise<unknown>((resolve) => {
      const call = raw.Stream((err, res) => resolve(err ?? res));
      call.write({
        from: 'a',
        to: 'b',
        messages: [Buffer.from([0xc1, 0xff]), encodeMessage(heartbeat(nid('a'), nid('b'), 1))],
      });
      call.write({
        from: 'a',
        to: 'b',
        messages: [new Packr().pack({ type: 'vote', from: 'a', to: 'b' })],
      });
      // Claims to come from a but the message inside says c.
      call.write({
        from: 'a',
        to: 'b',
        messages: [encodeMessage(heartbeat(nid('c'), nid('b'), 1))],
      });
      // Addressed to someone else.
      call.write({
        from: 'a',
        to: 'z',
        messages: [encodeMessage(heartbeat(nid('a'), nid('z'), 1))],
      });
      call.end();
    });
    expect(await done).toEqual({ batchesReceived: 4, messagesDropped: 4 });
    expect(atB).toEqual([heartbeat(nid('a'), nid('b'), 1)]);
    expect(b.statsSnapshot().rejected).toEqual({
      unknownSender: 0,
      wrongReceiver: 1,
      wrongCluster: 0,
      wrongIdentity: 0,
      malformed: 3,
      unauthenticated: 0,
      senderMismatch: 0,
      outOfBounds: 0,
    });

    // A frame over the receive limit is refused by grpc-js; the server lives on.
    const big = new Promise<unknown>((resolve) => {
      const call = raw.Stream((err, res) => resolve(err ?? res));
      call.on('error', () => undefined);
      call.write({ from: 'a', to: 'b', messages: [Buffer.alloc(17 * 1024 * 1024)] });
      call.end();
    });
    expect(await big).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    const again = new Promise<unknown>((resolve) => {
      const call = raw.Stream((err, res) => resolve(err ?? res));
      call.write({
        from: 'a',
        to: 'b',
        messages: [encodeMessage(heartbeat(nid('a'), nid('b'), 5))],
      });
      call.end();
    });
    expect(await again).toEqual({ batchesReceived: 1, messagesDropped: 0 });
  });

  it('bounds the queue of a dead peer and counts the drops', async () => {
    const deadPort = await freePort();
    const a = transport(nid('a'), await freePort(), { maxQueuedMessagesPerPeer: 100 });
    await a.start();
    a.setPeers(new Map([[nid('dead'), `127.0.0.1:${deadPort}`]]));
    const batch: Message[] = [];
    for (let i = 0; i < 5000; i++) batch.push(heartbeat(nid('a'), nid('dead'), 1, i));
    a.send(batch);
    const s = a.statsSnapshot();
    expect(s.peers[nid('dead')]!.queued).toBe(100);
    expect(s.dropped.queueFull).toBe(4900);
    // Unknown receivers and oversized messages are dropped too.
    a.send([heartbeat(nid('a'), nid('nobody'), 1), heartbeat(nid('a'), nid('a'), 1)]);
    expect(a.statsSnapshot().dropped).toMatchObject({ unknownPeer: 1, self: 1 });
  });

  it('bounds the queue by bytes and refuses a message larger than a frame', async () => {
    const a = transport(nid('a'), await freePort(), {
      maxQueuedBytesPerPeer: 10_000,
      maxFrameBytes: 64 * 1024,
    });
    await a.start();
    a.setPeers(new Map([[nid('dead'), `127.0.0.1:${await freePort()}`]]));
    const entry = (i: number, bytes: number): Message => ({
      type: 'app',
      from: nid('a'),
      to: nid('dead'),
      term: 1,
      prevIndex: i - 1,
      prevTerm: 1,
      commit: 0,
      entries: [{ index: i, term: 1, type: 'normal', data: new Uint8Array(bytes) }],
    });
    for (let i = 1; i <= 20; i++) a.send([entry(i, 1000)]);
    expect(a.statsSnapshot().peers[nid('dead')]!.queuedBytes).toBeLessThanOrEqual(10_000);
    a.send([entry(21, 100 * 1024)]);
    expect(a.statsSnapshot().dropped.tooLarge).toBe(1);
  });

  it('reconnects with backoff when a peer restarts on the same address', async () => {
    const { a, b, pb, peers } = await pair();
    const atB: Message[] = [];
    b.onMessage((m) => atB.push(m));
    a.send([heartbeat(nid('a'), nid('b'), 1)]);
    await eventually(() => expect(atB).toHaveLength(1));
    await b.close();
    // Messages sent while b is down: some may be lost, none may crash a.
    for (let i = 0; i < 5; i++) {
      a.send([heartbeat(nid('a'), nid('b'), 2)]);
      await new Promise((r) => setTimeout(r, 50));
    }
    const b2 = transport(nid('b'), pb);
    const atB2: Message[] = [];
    b2.onMessage((m) => atB2.push(m));
    await b2.start();
    b2.setPeers(peers);
    await eventually(() => {
      a.send([heartbeat(nid('a'), nid('b'), 3)]);
      expect(atB2.some((m) => m.term === 3)).toBe(true);
    });
    expect(a.statsSnapshot().reconnects).toBeGreaterThan(0);
  });
});
