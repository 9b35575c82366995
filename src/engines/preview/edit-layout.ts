/** Where edit reference images go: a grid whose cell count and shape suit the canvas. */
import type { Box } from './svg.js';

/**
 * Picks the column count that gives the largest square-ish cells (reference images are usually
 * near square), then centres the grid in `area`. Cells are whole pixels because sharp composites
 * at integer offsets.
 */
export function gridCells(count: number, area: Box, gap: number): Box[] {
  if (count <= 0 || area.width < 1 || area.height < 1) return [];
  let best = { cols: 1, rows: count, side: 0 };
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const side = Math.min((area.width - gap * (cols - 1)) / cols, (area.height - gap * (rows - 1)) / rows);
    if (side > best.side) best = { cols, rows, side };
  }
  const { cols, rows } = best;
  const cellWidth = Math.max(1, Math.floor((area.width - gap * (cols - 1)) / cols));
  const cellHeight = Math.max(1, Math.floor((area.height - gap * (rows - 1)) / rows));
  const cells: Box[] = [];
  for (let i = 0; i < count; i++) {
    const row = Math.floor(i / cols);
    const inRow = Math.min(cols, count - row * cols);
    // A short last row is centred rather than left-aligned.
    const rowOffset = ((cols - inRow) * (cellWidth + gap)) / 2;
    const gridWidth = cols * cellWidth + (cols - 1) * gap;
    const gridHeight = rows * cellHeight + (rows - 1) * gap;
    const left = area.x + (area.width - gridWidth) / 2 + rowOffset;
    const top = area.y + (area.height - gridHeight) / 2;
    cells.push({
      x: Math.max(0, Math.round(left + (i % cols) * (cellWidth + gap))),
      y: Math.max(0, Math.round(top + row * (cellHeight + gap))),
      width: cellWidth,
      height: cellHeight,
    });
  }
  return cells;
}
