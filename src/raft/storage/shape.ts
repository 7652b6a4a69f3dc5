/**
 * Shape checks for values that come back from outside the process (LevelDB, the wire):
 * msgpackr hands back whatever was encoded, so before a decoded value is trusted as an
 * Entry, ConfState or SnapshotMeta it is checked field by field. Each check returns an
 * error string (what is wrong, with a path) or null. A node id is parsed by the one parser
 * (src/shared/ids.ts), so what comes back is the branded NodeId.
 */
import { isNodeId, type NodeId } from '../../shared/ids.ts';

export function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

/** A log index or term: a non-negative safe integer. */
export function isIndex(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export function checkConfChange(x: unknown, path: string): string | null {
  if (!isObject(x)) return `${path} is not an object`;
  if (!isNodeId(x.nodeId)) return `${path}.nodeId is not a node id`;
  switch (x.type) {
    case 'addVoter':
    case 'addLearner':
      return typeof x.context === 'string' ? null : `${path}.context is not a string`;
    case 'removeNode':
      return null;
    default:
      return `${path}.type is not a membership change type`;
  }
}

export function checkEntry(x: unknown, path: string): string | null {
  if (!isObject(x)) return `${path} is not an object`;
  if (!isIndex(x.index) || x.index === 0) return `${path}.index is not a positive integer`;
  if (!isIndex(x.term)) return `${path}.term is not a non-negative integer`;
  if (x.type === 'normal') return x.data instanceof Uint8Array ? null : `${path}.data is not bytes`;
  if (x.type === 'conf') return checkConfChange(x.change, `${path}.change`);
  return `${path}.type is neither normal nor conf`;
}

function isNodeIdList(x: unknown): x is NodeId[] {
  return Array.isArray(x) && x.every(isNodeId);
}

export function checkConfState(x: unknown, path: string): string | null {
  if (!isObject(x)) return `${path} is not an object`;
  if (!isNodeIdList(x.voters)) return `${path}.voters is not a list of node ids`;
  if (!isNodeIdList(x.learners)) return `${path}.learners is not a list of node ids`;
  if (!isObject(x.context)) return `${path}.context is not an object`;
  for (const [k, v] of Object.entries(x.context)) {
    if (typeof v !== 'string') return `${path}.context.${k} is not a string`;
  }
  return null;
}

export function checkSnapshotMeta(x: unknown, path: string): string | null {
  if (!isObject(x)) return `${path} is not an object`;
  if (!isIndex(x.index)) return `${path}.index is not a non-negative integer`;
  if (!isIndex(x.term)) return `${path}.term is not a non-negative integer`;
  return checkConfState(x.conf, `${path}.conf`);
}
