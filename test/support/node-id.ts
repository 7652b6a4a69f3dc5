/**
 * Node ids in tests: a literal goes through the one parser (src/shared/ids.ts) like any id
 * that enters the system, so a test cannot hold an id the edges would refuse.
 */
import { requireNodeId, type NodeId } from '../../src/shared/ids.ts';

/** The node id `text`, branded; throws (BadRequestError) if it is not one. */
export function nid(text: string): NodeId {
  return requireNodeId(text, 'test node id');
}

/** Several node ids at once: `const [a, b, c] = nids('a', 'b', 'c')`. */
export function nids(...texts: string[]): NodeId[] {
  return texts.map(nid);
}
