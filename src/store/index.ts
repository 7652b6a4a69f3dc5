/**
 * Session stores: adapters that implement the coordinator's SessionStore port. memory: unit
 * tests and single-node development; raft: sessions replicated by Concord's Raft; db:
 * stateless nodes sharing PostgreSQL or MySQL/MariaDB (importing this loads their drivers;
 * the server loads the db store only in db mode, from src/store/db directly).
 */
export * from './memory/index.ts';
export * from './raft/index.ts';
export * from './db/index.ts';
