/** The in-memory session store: unit tests and single-node development. */
export { MemoryStore } from './memory-store.ts';
export type { ApplyListener, MemoryStoreOptions } from './memory-store.ts';
