/**
 * Session stores: adapters that implement the coordinator's SessionStore port. The memory
 * store lives with the coordinator (src/coordinator/memory-store.ts) for its unit tests.
 */
export * from './raft/index.ts';
