/**
 * Where the tests find their databases: the standard variables of each client (libpq's PG*,
 * the MySQL clients' MYSQL_*), with the local defaults of the team's machines. One reading,
 * one writing: the service step reads them here and writes the chosen server back the same way.
 */
export type Env = Record<string, string | undefined>;

export interface DbSettings {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface ServiceKind {
  /** How the progress lines and errors name it. */
  name: string;
  vars: { host: string; port: string; user: string; password: string; database: string };
  defaults: DbSettings;
}

export const POSTGRES: ServiceKind = {
  name: 'PostgreSQL',
  vars: {
    host: 'PGHOST',
    port: 'PGPORT',
    user: 'PGUSER',
    password: 'PGPASSWORD',
    database: 'PGDATABASE',
  },
  defaults: { host: '127.0.0.1', port: 5432, user: 'postgres', password: '', database: 'test' },
};

export const MARIADB: ServiceKind = {
  name: 'MariaDB',
  vars: {
    host: 'MYSQL_HOST',
    port: 'MYSQL_PORT',
    user: 'MYSQL_USER',
    password: 'MYSQL_PASSWORD',
    database: 'MYSQL_DATABASE',
  },
  defaults: { host: '127.0.0.1', port: 3306, user: 'root', password: '', database: 'test' },
};

export function readSettings(kind: ServiceKind, env: Env): DbSettings {
  const v = kind.vars;
  const d = kind.defaults;
  const port = Number(env[v.port] ?? d.port);
  return {
    host: env[v.host] || d.host,
    port: Number.isInteger(port) && port > 0 && port < 65_536 ? port : d.port,
    user: env[v.user] || d.user,
    password: env[v.password] ?? d.password,
    database: env[v.database] || d.database,
  };
}

/** The variables that tell a test (or a process it starts) to use this server. */
export function settingsEnv(kind: ServiceKind, s: DbSettings): Record<string, string> {
  const v = kind.vars;
  return {
    [v.host]: s.host,
    [v.port]: String(s.port),
    [v.user]: s.user,
    [v.password]: s.password,
    [v.database]: s.database,
  };
}

/** Which of the kind's variables the caller set (for the messages: "you asked for X"). */
export function setVars(kind: ServiceKind, env: Env): string[] {
  return Object.values(kind.vars).filter((name) => env[name] !== undefined);
}

export function describe(s: DbSettings): string {
  return `${s.user}@${s.host}:${s.port}/${s.database}`;
}
