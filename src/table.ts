// Plain text tables and CSV for reports. Pure functions: no I/O, no state.
//
// Cells often hold paths from a vserver, which that server's root chose: a name with a
// newline would break a table row, and one with an escape sequence would drive the
// terminal of the admin who reads the report. formatTable therefore shows control
// characters escaped (`visible`); toCsv keeps every field exact, quoted as RFC 4180 says.

/** Escapes C0 and C1 control characters and DEL (`\n`, `\t`, `\x1b`, `\x85`...): one line, no terminal control. */
export function visible(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    switch (c) {
      case '\n': return '\\n';
      case '\r': return '\\r';
      case '\t': return '\\t';
      default: return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
    }
  });
}

// East Asian wide and fullwidth characters take two columns on a terminal; combining
// marks and zero-width characters none. (An approximation of wcwidth: good for tables.)
const WIDE = /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6\u{1f300}-\u{1f64f}\u{1f900}-\u{1f9ff}\u{20000}-\u{3fffd}]/u;
const ZERO = /[\p{Mn}\p{Me}\u200b-\u200f\u2060\ufeff]/u;

/** Terminal columns taken by s (after `visible`). */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += ZERO.test(ch) ? 0 : WIDE.test(ch) ? 2 : 1;
  return w;
}

// A count, a size as humanBytes writes it, a duration, a percentage: right-aligned.
const NUMERIC = /^[-+]?(\d[\d,_]*(\.\d+)?|\.\d+)(e[-+]?\d+)?\s?(%|B|KiB|MiB|GiB|TiB|PiB|kB|MB|GB|TB|ms|s|min|h)?$/i;

const pad = (s: string, width: number, align: 'l' | 'r') => {
  const fill = ' '.repeat(Math.max(0, width - displayWidth(s)));
  return align === 'r' ? fill + s : s + fill;
};

/**
 * An aligned text table: a header line, then one line per row, columns two spaces apart,
 * no trailing spaces. Without align, the first column is left-aligned and every other
 * column is right-aligned when all its non-empty cells are numbers (counts, sizes such as
 * `1.5 KiB`, durations such as `7 ms`), left-aligned otherwise. Short rows are padded with
 * empty cells; control characters in cells are shown escaped.
 */
export function formatTable(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const ncol = Math.max(head.length, ...rows.map((r) => r.length));
  const cells = [head, ...rows].map((r) => Array.from({ length: ncol }, (_, i) => visible(String(r[i] ?? ''))));
  const body = cells.slice(1);
  const aligns = Array.from({ length: ncol }, (_, i): 'l' | 'r' => {
    if (align?.[i]) return align[i];
    if (i === 0) return 'l';
    const filled = body.map((r) => r[i]).filter((c) => c !== '');
    return filled.length > 0 && filled.every((c) => NUMERIC.test(c)) ? 'r' : 'l';
  });
  const widths = Array.from({ length: ncol }, (_, i) => Math.max(0, ...cells.map((r) => displayWidth(r[i]))));
  return cells.map((r) => r.map((c, i) => pad(c, widths[i], aligns[i])).join('  ').trimEnd()).join('\n') + '\n';
}

const csvField = (v: string | number): string => {
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/**
 * CSV as RFC 4180 has it: a header record, then one record per row, each ended by CRLF;
 * a field holding a comma, a double quote, CR or LF is enclosed in double quotes, with
 * its double quotes doubled. Nothing else is changed (spaces and other characters are kept).
 */
export function toCsv(head: string[], rows: (string | number)[][]): string {
  return [head, ...rows].map((r) => r.map(csvField).join(',') + '\r\n').join('');
}
