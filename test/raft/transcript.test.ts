/**
 * Scripted transcripts: input → the exact messages the cores exchange, kept as vitest file
 * snapshots. A change in the protocol's message flow shows up as a readable diff (update
 * with `npx vitest run -u` once the new flow is understood to be right).
 */
import { expect, it } from 'vitest';
import { describeMessage } from '../sim/fake-network.ts';
import { Cluster } from './harness.ts';
import { nid } from '../support/node-id.ts';

it('transcript: three nodes, a campaigns (pre-vote, vote), wins, and replicates one entry', async () => {
  const c = new Cluster([nid('a'), nid('b'), nid('c')]);
  const lines: string[] = [];
  c.campaign(nid('a'));
  lines.push('-- a campaigns');
  c.deliverAll();
  lines.push(...c.sent.map(describeMessage));
  const mark = c.sent.length;
  lines.push('-- a proposes "x"');
  c.propose(nid('a'), 'x');
  c.deliverAll();
  c.tickAll(1);
  lines.push(...c.sent.slice(mark).map(describeMessage));
  lines.push(
    '-- state',
    ...c.ids.map(
      (id) =>
        `${id}: ${c.status(id).role} term ${c.status(id).term} commit ${c.status(id).commit} log [${c.terms(id).join(',')}]`,
    ),
  );
  await expect(lines.join('\n') + '\n').toMatchFileSnapshot(
    './__snapshots__/election-transcript.txt',
  );
  c.assertSafe();
});
