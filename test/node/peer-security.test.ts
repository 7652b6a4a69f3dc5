/**
 * The Raft port under attack (issue 14 item 1, docs/security.md): three `kv-main`
 * processes with mutual TLS, and a stranger on the network speaking the real wire format.
 * Without a certificate of the cluster's CA nothing it sends reaches Raft: no term moves,
 * no forged acknowledgement commits anything, no forged snapshot is installed. With a
 * member's own certificate it is still only that member, and its numbers are bounded.
 * Every node survives and restarts clean.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message, NodeId } from '../../src/raft/core/types.ts';
import { MAX_TERM_LEAD } from '../../src/raft/transport/bounds.ts';
import { nid, nids } from '../support/node-id.ts';
import { createTestPki } from '../support/pki.ts';
import { attack, type AttackerCredentials, type ForgedFrame } from './raft-attacker.ts';
import { eventually, KvCluster, sleep, type NodeStatus } from './kv-cluster.ts';

const clusters: KvCluster[] = [];

afterEach(async () => {
  for (const c of clusters.splice(0)) await c.destroy();
});

async function cluster(): Promise<KvCluster> {
  const c = new KvCluster();
  clusters.push(c);
  await c.start();
  return c;
}

interface Status extends NodeStatus {
  transport: NodeStatus['transport'] & { rejected: Record<string, number>; received: number };
}

const status = (c: KvCluster, id: string) => c.status(id) as Promise<Status>;

/** Forged frames of every kind that would hurt if counted: term moves, votes, acks, a snapshot. */
function forgeries(from: NodeId, to: NodeId, s: Status, term: number): Message[] {
  return [
    { type: 'vote', from, to, term, lastLogIndex: 1e9, lastLogTerm: term, transfer: true },
    { type: 'heartbeat', from, to, term, commit: s.commit + 100, readCtx: null },
    {
      type: 'appResp',
      from,
      to,
      term: s.term,
      reject: false,
      index: s.lastIndex,
      hintTerm: 0,
      hintIndex: 0,
    },
    {
      type: 'snap',
      from,
      to,
      term,
      meta: {
        index: s.lastIndex + 1000,
        term,
        conf: { voters: [from], learners: [], context: {} },
      },
      offset: 0,
      chunk: new Uint8Array(64).fill(0xee),
      done: true,
    },
  ];
}

describe('raft port under attack', () => {
  it('a process without a peer certificate, or with one of another CA, moves no term, gets no ack counted and installs no snapshot', async () => {
    const c = await cluster();
    const leader = nid(await c.waitForLeader());
    for (let i = 0; i < 5; i++) await c.put(`before-${i}`, `v${i}`);
    const [f1, f2] = nids(...c.ids.filter((id) => id !== leader)) as [NodeId, NodeId];
    const before = await status(c, leader);
    const follower = await status(c, f1);
    const stranger = createTestPki(`${c.root}/stranger`, 'Some other CA');
    const clusterCa = (c.pki?.dir ?? c.root) + '/ca.pem';
    const attackers: Record<string, AttackerCredentials> = {
      plaintext: { kind: 'plaintext' },
      tlsWithoutCertificate: { kind: 'tlsNoCert', trustCa: clusterCa },
      // A valid certificate naming the follower's id, issued by another CA.
      otherCaCertificate: { kind: 'tlsCert', trustCa: clusterCa, files: stranger.node(f1) },
    };
    const forgedTerm = before.term + 50;
    for (const [name, creds] of Object.entries(attackers)) {
      for (const target of [leader, f2]) {
        const s = await status(c, target);
        const frame: ForgedFrame = {
          from: f1,
          to: target,
          clusterId: before.clusterId,
          fromUid: follower.nodeUid,
          messages: forgeries(f1, target, s, forgedTerm),
        };
        const r = await attack(`127.0.0.1:${c.raftPort(target)}`, creds, [frame, frame]);
        expect(r.code, `${name} → ${target}: ${r.details}`).not.toBeNull();
        expect(r.code).not.toBe(grpc.status.OK);
      }
    }
    // Data directories are this user's only.
    for (const id of c.ids) expect(statSync(join(c.root, id)).mode & 0o777, id).toBe(0o700);
    // Nothing moved: same leader, no forged term, no snapshot restored, every node alive.
    await sleep(300);
    for (const id of c.ids) {
      const s = await status(c, id);
      expect(s.term, id).toBeLessThan(forgedTerm);
      expect(s.leader, id).toBe(leader);
      expect(s.snapshotsRestored, id).toBe(0);
    }

    // Acks: with both followers down the leader alone cannot commit. A stranger answering
    // for a follower must not make the write commit.
    await c.kill(f1);
    await c.kill(f2);
    const pending = c
      .request(leader, 'PUT', '/kv/forged-commit', 'x')
      .then(() => 'committed')
      .catch(() => 'refused');
    await sleep(100);
    const s = await status(c, leader);
    for (const [name, creds] of Object.entries(attackers)) {
      for (let round = 0; round < 5; round++) {
        const acks = [f1, f2].map<ForgedFrame>((from) => ({
          from,
          to: leader,
          clusterId: before.clusterId,
          fromUid: '',
          messages: [1, 2, 3].map((k) => ({
            type: 'appResp',
            from,
            to: leader,
            term: s.term,
            reject: false,
            index: before.lastIndex + k,
            hintTerm: 0,
            hintIndex: 0,
          })),
        }));
        const r = await attack(`127.0.0.1:${c.raftPort(leader)}`, creds, acks);
        expect(r.code, name).not.toBeNull();
      }
    }
    expect(await pending).toBe('refused');

    // Everything restarts clean. (The refused write stays in the old leader's log, uncommitted;
    // a later leader may still commit it, as Raft does with any uncommitted entry.)
    await c.kill(leader);
    await Promise.all(c.ids.map((id) => c.spawn(id)));
    const again = await c.waitForLeader();
    const found = await c.dump(again, 'before-');
    expect(Object.keys(found).sort()).toEqual([0, 1, 2, 3, 4].map((i) => `before-${i}`));
    await c.put('after', 'ok');
  });

  it("a member's own certificate speaks only for that member, within bounds; refusals are counted", async () => {
    const c = await cluster();
    const leader = nid(await c.waitForLeader());
    await c.put('k', 'v');
    const [f1] = nids(...c.ids.filter((id) => id !== leader)) as [NodeId];
    const follower = await status(c, f1);
    // A stolen (or buggy) member: the follower's certificate, its cluster id and identity.
    await c.kill(f1);
    const creds: AttackerCredentials = {
      kind: 'tlsCert',
      trustCa: (c.pki?.dir ?? c.root) + '/ca.pem',
      files: c.pki!.node(f1),
    };
    const before = await status(c, leader);
    const frame = (messages: Message[], over: Partial<ForgedFrame> = {}): ForgedFrame => ({
      from: f1,
      to: leader,
      clusterId: before.clusterId,
      fromUid: follower.nodeUid,
      messages,
      ...over,
    });
    const other = nid(c.ids.find((id) => id !== leader && id !== f1)!);
    const hb = (from: NodeId, term: number): Message => ({
      type: 'heartbeat',
      from,
      to: leader,
      term,
      commit: 0,
      readCtx: null,
    });
    const vote = (term: number): Message => ({
      type: 'vote',
      from: f1,
      to: leader,
      term,
      lastLogIndex: 1e6,
      lastLogTerm: term,
      transfer: true,
    });
    const address = `127.0.0.1:${c.raftPort(leader)}`;
    // 1. Posing as another member: the frame's sender is not the certificate's node.
    await attack(address, creds, [frame([hb(other, before.term + 5)], { from: other })]);
    // 2. Numbers only a forgery carries: a term of 2^53−1, a term far ahead, an ack of an
    //    index the leader never had.
    await attack(address, creds, [
      frame([
        vote(Number.MAX_SAFE_INTEGER),
        vote(before.term + MAX_TERM_LEAD + 1),
        {
          type: 'appResp',
          from: f1,
          to: leader,
          term: before.term,
          reject: false,
          index: before.lastIndex + 10_000,
          hintTerm: 0,
          hintIndex: 0,
        },
      ]),
    ]);
    // 3. Another cluster's frame.
    const wrong = await attack(address, creds, [
      frame([hb(f1, before.term)], { clusterId: 'feedfeedfeedfeed' }),
    ]);
    expect(wrong.code).toBe(grpc.status.FAILED_PRECONDITION);

    const after = await eventually('the refusals to be counted', async () => {
      const s = await status(c, leader);
      const r = s.transport.rejected;
      if (!(r.senderMismatch! >= 1 && r.outOfBounds! >= 3 && r.wrongCluster! >= 1))
        throw new Error(JSON.stringify(r));
      return s;
    });
    expect(after.term).toBe(before.term);
    expect(after.role).toBe('leader');
    expect(after.commit).toBeLessThanOrEqual(after.lastIndex);

    // The real member comes back and is served; everyone restarts clean.
    await c.spawn(f1);
    await c.put('k2', 'v2');
    await Promise.all(c.ids.map((id) => c.kill(id)));
    await Promise.all(c.ids.map((id) => c.spawn(id)));
    const again = await c.waitForLeader();
    expect(await c.dump(again, 'k')).toEqual({ k: 'v', k2: 'v2' });
  });
});
