/**
 * PostgreSQL: keeps the cached plans of the store's prepared statements fit for the size of
 * its tables.
 *
 * A named prepared statement gets a generic plan after its fifth execution and keeps it
 * until something invalidates it (an ANALYZE of a table it reads, a DDL). On tables that
 * were empty when the plan was made, that plan is a sequential scan and a hash join: right
 * for ten pages, wrong for ten thousand. The batched Begin then read the whole finished
 * table and the batched commit the whole (dead-tuple-bloated) global table on every
 * statement, and a fresh db-mode cluster ran so until autovacuum's first ANALYZE, a minute
 * or more later: `npm run bench -- tps` measured 4.2 million finished rows read by 963
 * statements in 10 s, and PostgreSQL's CPU per transaction growing with the tables.
 *
 * So the lease holder looks at the physical size of the hot tables every
 * DB_PLAN_CHECK_INTERVAL_MS (one statement; `pg_relation_size` reads no row) and runs
 * ANALYZE on a table that has reached DB_PLAN_ANALYZE_MIN_PAGES pages and at least doubled
 * since it last analyzed it. ANALYZE updates the statistics, which invalidates every
 * node's cached plans on that table: each re-plans at its next execution with the sizes
 * as they are. Doubling bounds the count: a table that grows to N pages is analyzed about
 * log2(N / DB_PLAN_ANALYZE_MIN_PAGES) times, a table at its steady size never again.
 * ANALYZE only reads; a role that may not analyze a table gets a WARNING, not an error.
 */
import { DB_PLAN_ANALYZE_GROWTH, DB_PLAN_ANALYZE_MIN_PAGES } from './limits.ts';
import type { SqlDriver, TableNames } from './sql.ts';

/** PostgreSQL's page size, bytes (pg_relation_size answers bytes). */
const PAGE_BYTES = 8192;

export class PgPlanUpkeep {
  /** Pages of each table when this node last analyzed it (0: not yet). */
  private readonly analyzedAt = new Map<string, number>();
  private readonly tables: string[];
  private readonly sizeSql: string;
  /** ANALYZE statements run (tests, logs). */
  readonly stats = { checks: 0, analyzed: 0 };

  constructor(
    private readonly driver: SqlDriver,
    t: TableNames,
  ) {
    this.tables = [t.global, t.branch, t.lock, t.finished, t.dedup];
    for (const table of this.tables) this.analyzedAt.set(table, 0);
    this.sizeSql = `SELECT ${this.tables
      .map((table, i) => `COALESCE(pg_relation_size(to_regclass('${table}')), 0) AS s${i}`)
      .join(', ')}`;
  }

  /** One check: the tables' sizes, then ANALYZE of those that grew enough. Returns them. */
  async tick(): Promise<string[]> {
    this.stats.checks += 1;
    const row = (await this.driver.query(this.sizeSql)).rows[0] ?? {};
    const grown: string[] = [];
    this.tables.forEach((table, i) => {
      const pages = Math.floor(Number(row[`s${i}`] ?? 0) / PAGE_BYTES);
      const last = this.analyzedAt.get(table)!;
      // A table that shrank (VACUUM truncated it) counts its growth from where it is now.
      if (pages < last) this.analyzedAt.set(table, pages);
      if (pages >= DB_PLAN_ANALYZE_MIN_PAGES && pages >= DB_PLAN_ANALYZE_GROWTH * last) {
        grown.push(table);
        this.analyzedAt.set(table, pages);
      }
    });
    if (grown.length > 0) {
      await this.driver.query(`ANALYZE ${grown.join(', ')}`);
      this.stats.analyzed += grown.length;
    }
    return grown;
  }
}
