/**
 * MySQL/MariaDB: the Begins of one event-loop turn in one short transaction (issue 12 item
 * 6, "do the same for MySQL"): one multi-row INSERT of their requestIds' dedup rows, one
 * multi-row INSERT … SELECT of their global rows (none whose xid has a finished record),
 * where one Begin alone takes the same two statements. MySQL has no data-modifying WITH and
 * no per-row ON CONFLICT … RETURNING, so the batch is all or nothing: a remembered or
 * concurrent requestId, an xid inserted concurrently (a duplicate key), or an xid with a
 * finished record (fewer rows inserted than Begins) rolls it back, and each of its Begins
 * goes the general way, which re-reads and answers as the state machine does.
 *
 * The turn's batcher is PostgreSQL's (TurnBatcher): at most DB_BATCH_MAX_COMMANDS Begins per
 * transaction, DB_BATCH_MAX_IN_FLIGHT transactions at once, no two Begins of one batch with
 * one requestId.
 */
import { GLOBAL_COLUMNS, globalRowValues } from './rows.ts';
import { TurnBatcher, type BeginItem } from './batch-pg.ts';
import type { SqlDriver, SqlValue, TableNames } from './sql.ts';

/** Rolls the batch's transaction back: its Begins go the general way. */
class Declined extends Error {}

export class MysqlBeginBatches {
  readonly turn: TurnBatcher<BeginItem, boolean>;
  private readonly globalCols = GLOBAL_COLUMNS.join(', ');
  /** One row of the derived table the global rows are selected from (named columns). */
  private readonly firstRow = `SELECT ${GLOBAL_COLUMNS.map((c) => `? AS ${c}`).join(', ')}`;
  private readonly nextRow = `SELECT ${GLOBAL_COLUMNS.map(() => '?').join(', ')}`;

  constructor(
    private readonly driver: SqlDriver,
    private readonly t: TableNames,
    private readonly handOffMs: number,
  ) {
    this.turn = new TurnBatcher(
      (items) => this.run(items),
      // Two Begins of one batch never share a requestId (and xids never repeat).
      (item) =>
        item.command.requestId === null ? `x\n${item.command.xid}` : `r\n${item.command.requestId}`,
    );
  }

  /** A Begin through the turn's transaction: true when it was written. */
  begin(item: BeginItem): Promise<boolean> {
    return this.turn.add(item);
  }

  private async run(items: BeginItem[]): Promise<boolean[]> {
    try {
      await this.driver.transaction('write', async (conn) => {
        const remembered = items.filter((i) => i.command.requestId !== null);
        if (remembered.length > 0) {
          const params: SqlValue[] = [];
          for (const i of remembered) params.push(i.command.requestId, JSON.stringify(i.result));
          await conn.query(
            `INSERT INTO ${this.t.dedup} (kind, request_id, result) VALUES ${remembered
              .map(() => `('Begin', ?, ?)`)
              .join(', ')}`,
            params,
          );
        }
        const params: SqlValue[] = [];
        for (const i of items) params.push(...globalRowValues(i.session, this.handOffMs));
        const rows = items.map((_, n) => (n === 0 ? this.firstRow : this.nextRow));
        const g = await conn.query(
          `INSERT INTO ${this.t.global} (${this.globalCols})
             SELECT v.* FROM (${rows.join(' UNION ALL ')}) v
             WHERE NOT EXISTS (SELECT 1 FROM ${this.t.finished} f WHERE f.xid = v.xid)`,
          params,
        );
        if (g.affected !== items.length) throw new Declined();
      });
      return items.map(() => true);
    } catch (err) {
      if (err instanceof Declined) return items.map(() => false);
      const kind = this.driver.classify(err);
      // A duplicate key (a remembered or concurrent requestId, an xid) or a deadlock: each
      // Begin goes the general way, which re-reads.
      if (kind === 'duplicate' || kind === 'conflict') return items.map(() => false);
      throw err;
    }
  }
}
