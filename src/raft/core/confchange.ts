import type { ConfChange, ConfState, NodeId } from './types.ts';

export function emptyConf(): ConfState {
  return { voters: [], learners: [], context: {} };
}

export function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners], context: { ...c.context } };
}

export function isMember(c: ConfState, id: NodeId): boolean {
  return c.voters.includes(id) || c.learners.includes(id);
}

/** Why a change cannot be applied to a configuration, or null if it can. */
export function confChangeError(c: ConfState, cc: ConfChange): string | null {
  switch (cc.type) {
    case 'addVoter':
      if (c.voters.includes(cc.nodeId)) return `${cc.nodeId} is already a voter`;
      if (!c.learners.includes(cc.nodeId) && cc.context === '')
        return `adding ${cc.nodeId} needs its endpoint context`;
      return null;
    case 'addLearner':
      if (isMember(c, cc.nodeId)) return `${cc.nodeId} is already a member`;
      return null;
    case 'removeNode':
      if (!isMember(c, cc.nodeId)) return `${cc.nodeId} is not a member`;
      if (c.voters.length === 1 && c.voters[0] === cc.nodeId) return 'cannot remove the last voter';
      return null;
  }
}

/**
 * Applies one single-server change. Sorted member lists keep encodings byte-identical across nodes.
 */
export function applyConfChange(c: ConfState, cc: ConfChange): ConfState {
  const next = cloneConf(c);
  const id = cc.nodeId;
  next.voters = next.voters.filter((v) => v !== id);
  next.learners = next.learners.filter((v) => v !== id);
  switch (cc.type) {
    case 'addVoter':
      next.voters.push(id);
      if (cc.context !== '') next.context[id] = cc.context;
      break;
    case 'addLearner':
      next.learners.push(id);
      next.context[id] = cc.context;
      break;
    case 'removeNode':
      delete next.context[id];
      break;
  }
  next.voters.sort();
  next.learners.sort();
  return next;
}
