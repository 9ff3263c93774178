import logUpdate from 'log-update';

/**
 * Shows one frame of a live view (`watch`, `top`): redrawn in place on a terminal; to a file or a
 * pipe, one frame after another with a blank line between, without escapes.
 */
export function showFrame(text: string): void {
  if (process.stdout.isTTY) logUpdate(text);
  else console.log(`${text}\n`);
}
