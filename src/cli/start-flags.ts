/** The flag layer of `concord start` (the highest of the configuration's layers). */
import type { ConfigFlag } from '../server/config.ts';
import { parseSetFlag } from '../server/config/layers.ts';

/** `--set key=value` in the order given, then `--log-level`. */
export function startFlags(opts: { logLevel?: string; set?: string[] }): ConfigFlag[] {
  const flags: ConfigFlag[] = (opts.set ?? []).map((f) => {
    const { key, text } = parseSetFlag(f);
    return { key, text, flag: `--set ${key}` };
  });
  if (opts.logLevel !== undefined)
    flags.push({ key: 'log.level', text: opts.logLevel, flag: '--log-level' });
  return flags;
}
