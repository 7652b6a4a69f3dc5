/** Plain-text tables and small formatting helpers for the CLI. */

/** Renders rows under a header, columns padded to their widest cell. */
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) =>
    Math.max(visible(h), ...rows.map((r) => visible(r[i] ?? ''))),
  );
  const pad = (c: string, w: number) => c + ' '.repeat(Math.max(0, w - visible(c)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : pad(c, widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export const isTty = (): boolean => process.stdout.isTTY === true;

/** ANSI styling, only on a terminal and unless NO_COLOR is set. */
export function style(
  code: 'bold' | 'dim' | 'green' | 'yellow' | 'red' | 'cyan',
  text: string,
): string {
  if (!isTty() || process.env.NO_COLOR) return text;
  const codes = {
    bold: [1, 22],
    dim: [2, 22],
    green: [32, 39],
    yellow: [33, 39],
    red: [31, 39],
    cyan: [36, 39],
  } as const;
  const [on, off] = codes[code];
  return `\u001b[${on}m${text}\u001b[${off}m`;
}

/** Printed width: ANSI styling takes no columns. */
function visible(s: string): number {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;]*m/g, '').length;
}
