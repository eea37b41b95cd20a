// @ts-check
/** Markdown tables (with ratios against the baselines) and hand-written SVG bar charts. */

export const BASELINES = /** @type {const} */ (['socketio', 'ws', 'uws']);

/** @param {number | null | undefined} v @param {number} [digits] */
export function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return 'n/a';
  if (!Number.isFinite(v)) return '∞';
  const a = Math.abs(v);
  const d = digits ?? (a >= 1000 ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3);
  const s = v.toFixed(d);
  if (a >= 10_000) return Number(s).toLocaleString('en-US', { maximumFractionDigits: 0 });
  return s;
}

/** @param {number | null | undefined} a @param {number | null | undefined} b */
export function ratio(a, b) {
  if (a === null || a === undefined || b === null || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/**
 * @typedef {{ key: string, title: string, digits?: number, ratio?: boolean, lowerIsBetter?: boolean }} Col
 * @typedef {Record<string, any> & { server: string }} Row
 */

/**
 * A markdown table: one line per row, each metric followed by its ratio to every baseline row
 * present (ratioCols). The baseline row itself shows 1.00.
 * @param {Row[]} rows @param {Col[]} cols @param {{ baselineOf?: (row: Row, b: string) => Row | undefined }} [o]
 */
export function table(rows, cols, o = {}) {
  const present = BASELINES.filter((b) => rows.some((r) => r.server === b));
  const header = ['server'];
  for (const c of cols) {
    header.push(c.title);
    if (c.ratio) for (const b of present) header.push(`÷ ${b}`);
  }
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const cells = [r.server];
    for (const c of cols) {
      const v = r[c.key];
      cells.push(typeof v === 'number' ? fmt(v, c.digits) : (v ?? 'n/a'));
      if (c.ratio) {
        for (const b of present) {
          const br = o.baselineOf ? o.baselineOf(r, b) : rows.find((x) => x.server === b);
          const q = ratio(typeof v === 'number' ? v : null, br ? br[c.key] : null);
          cells.push(q === null ? 'n/a' : `${fmt(q, q >= 100 ? 0 : 2)}×`);
        }
      }
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** @param {string} s */
function esc(s) { return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'); }

/**
 * Horizontal bar chart as an SVG string.
 * @param {string} title @param {string} unit @param {{ label: string, value: number | null | undefined, highlight?: boolean }[]} items
 */
export function barChart(title, unit, items) {
  const valid = items.filter((i) => typeof i.value === 'number' && Number.isFinite(i.value));
  const max = Math.max(1e-9, ...valid.map((i) => /** @type {number} */ (i.value)));
  const rowH = 28, left = 170, width = 760, barW = width - left - 130, top = 44;
  const h = top + items.length * rowH + 20;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`];
  items.forEach((it, i) => {
    const y = top + i * rowH;
    const v = typeof it.value === 'number' && Number.isFinite(it.value) ? it.value : null;
    const w = v === null ? 0 : Math.max(1, (v / max) * barW);
    out.push(`<text x="${left - 8}" y="${y + 17}" text-anchor="end">${esc(it.label)}</text>`);
    out.push(`<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 10}" fill="${it.highlight ? '#d9480f' : '#4c6ef5'}"/>`);
    out.push(`<text x="${left + w + 6}" y="${y + 17}">${v === null ? 'n/a' : esc(fmt(v))} ${esc(unit)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
