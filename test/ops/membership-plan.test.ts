/**
 * The plan `concord cluster change | add | remove` prints before acting: who is added,
 * promoted, removed, the voters left, and the warnings (an even number of voters, fewer
 * than three). Pure, from a leader's metadata.
 */
import { describe, expect, it } from 'vitest';
import type { ClusterMetadata, MemberRole } from '../../src/shared/metadata.ts';
import {
  isEmptyPlan,
  membersOfRaftClusterStr,
  planChange,
  planText,
  removedVoters,
  voterWarnings,
  withAdded,
  withRemoved,
} from '../../src/cli/membership-plan.ts';
import { parseMemberList } from '../../src/cli/cluster-ops.ts';
import { BadRequestError } from '../../src/shared/errors.ts';

function md(members: Array<[string, MemberRole]>): ClusterMetadata {
  return {
    storeMode: 'raft',
    group: 'default',
    term: 3,
    leaderId: members.find((m) => m[1] === 'LEADER')?.[0] ?? null,
    metadataVersion: 'v',
    answeredBy: 'node1',
    commitIndex: 1,
    appliedIndex: 1,
    lastIndex: 1,
    nodes: members.map(([nodeId, role], i) => ({
      group: 'default',
      nodeId,
      role,
      term: 3,
      control: { host: '127.0.0.1', port: 7091 + i },
      transaction: { host: '127.0.0.1', port: 8091 + i },
      internal: { host: '127.0.0.1', port: 9091 + i },
      healthy: true,
      version: null,
    })),
  };
}

const three = md([
  ['node1', 'LEADER'],
  ['node2', 'FOLLOWER'],
  ['node3', 'FOLLOWER'],
]);

describe('planChange', () => {
  // [name, metadata, --members, add, promote, remove, voters after, warnings]
  const cases: Array<
    [string, ClusterMetadata, string, string[], string[], string[], number, RegExp[]]
  > = [
    ['the same members: nothing', three, 'node1,node2,node3', [], [], [], 3, []],
    [
      'dropping node3 (the issue: it went silently)',
      three,
      'node1,node2',
      [],
      [],
      ['node3'],
      2,
      [/2 voters: losing either one stops it/],
    ],
    [
      'a fourth voter',
      three,
      'node1,node2,node3,node4@127.0.0.1:9094:8094:7094',
      ['node4'],
      [],
      [],
      4,
      [/even number of voters \(4\): it survives 1 failure/],
    ],
    [
      'a fifth, and a learner promoted',
      md([
        ['node1', 'LEADER'],
        ['node2', 'FOLLOWER'],
        ['node3', 'FOLLOWER'],
        ['node4', 'LEARNER'],
      ]),
      'node1,node2,node3,node4,node5@127.0.0.1:9095:8095:7095',
      ['node5'],
      ['node4'],
      [],
      5,
      [],
    ],
    [
      'replacing the leader: removed last',
      three,
      'node2,node3,node4@127.0.0.1:9094:8094:7094',
      ['node4'],
      [],
      ['node1'],
      3,
      [],
    ],
    ['one voter left', three, 'node2', [], [], ['node1', 'node3'], 1, [/survives no failure/]],
  ];
  it.each(cases)('%s', (_name, m, members, add, promote, remove, after, warnings) => {
    const plan = planChange(m, parseMemberList(members));
    expect(plan.add).toEqual(add);
    expect(plan.promote).toEqual(promote);
    expect(plan.remove.map((r) => r.nodeId).sort()).toEqual([...remove].sort());
    expect(plan.votersAfter).toBe(after);
    expect(plan.warnings).toHaveLength(warnings.length);
    warnings.forEach((w, i) => expect(plan.warnings[i]).toMatch(w));
    expect(isEmptyPlan(plan)).toBe(add.length + promote.length + remove.length === 0);
  });

  it('removes learners first and the leader last, and asks only about voters', () => {
    const m = md([
      ['node1', 'LEADER'],
      ['node2', 'FOLLOWER'],
      ['node3', 'FOLLOWER'],
      ['node4', 'LEARNER'],
    ]);
    const plan = planChange(m, parseMemberList('node3'));
    expect(plan.remove.map((r) => r.nodeId)).toEqual(['node4', 'node2', 'node1']);
    expect(removedVoters(plan)).toEqual(['node2', 'node1']);
    expect(removedVoters(planChange(m, parseMemberList('node1,node2,node3')))).toEqual([]);
  });

  it('prints the difference and the voters before and after', () => {
    const text = planText(planChange(three, parseMemberList('node1,node2')));
    expect(text).toContain('- remove node3 (a voter)');
    expect(text).toContain('= keep node1, node2');
    expect(text).toContain('voters: 3 → 2');
    expect(text).toContain('warning: the group would have 2 voters');
    expect(planText(planChange(three, parseMemberList('node3,node1,node2')))).toContain(
      'Nothing to change',
    );
  });
});

describe('voterWarnings', () => {
  it.each([
    [1, 1],
    [2, 1],
    [3, 0],
    [4, 1],
    [5, 0],
    [6, 1],
    [7, 0],
  ])('%d voters: %d warning(s)', (n, count) => expect(voterWarnings(n)).toHaveLength(count));
});

describe('cluster add and remove as member lists', () => {
  it('add: the members and the new node; refuses a member or a node without endpoints', () => {
    const [spec] = parseMemberList('node4@127.0.0.1:9094:8094:7094');
    expect(withAdded(three, spec!).map((m) => m.nodeId)).toEqual([
      'node1',
      'node2',
      'node3',
      'node4',
    ]);
    expect(() => withAdded(three, { nodeId: 'node2', raft: 'h:1' })).toThrow(/already a member/);
    expect(() => withAdded(three, { nodeId: 'node9' })).toThrow(BadRequestError);
  });

  it('remove: the members but one; refuses a stranger', () => {
    expect(withRemoved(three, 'node2').map((m) => m.nodeId)).toEqual(['node1', 'node3']);
    expect(() => withRemoved(three, 'node9')).toThrow(/not a member/);
  });

  it('--members refuses a malformed node id before anything is sent', () => {
    expect(parseMemberList('node1, node2@h:1:2:3')).toEqual([
      { nodeId: 'node1' },
      { nodeId: 'node2', raft: 'h:1', transaction: 'h:2', control: 'h:3' },
    ]);
    for (const bad of ['-node', 'node 1', 'nöde', 'a/b@h:1:2:3', 'x'.repeat(65)])
      expect(() => parseMemberList(bad), bad).toThrow(BadRequestError);
  });

  it("Seata's raftClusterStr maps raft addresses to members", () => {
    expect(membersOfRaftClusterStr(three, '127.0.0.1:9091,127.0.0.1:9093')).toEqual([
      { nodeId: 'node1' },
      { nodeId: 'node3' },
    ]);
    expect(() => membersOfRaftClusterStr(three, '127.0.0.1:1')).toThrow(/not the raft address/);
  });
});
