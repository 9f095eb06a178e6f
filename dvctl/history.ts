/**
 * The history of `dvctl console` in `~/.dvctl_history`: one command per line, oldest first (as
 * shells keep theirs), at most {@link DEFAULT_HISTORY_SIZE} lines, readable by its owner only.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const DEFAULT_HISTORY_SIZE = 500;
export const HISTORY_FILE_NAME = ".dvctl_history";

export function defaultHistoryFile(home = homedir()): string {
  return join(home, HISTORY_FILE_NAME);
}

/** Entries for readline's `history` option: newest first, at most `max`; none when unreadable. */
export function loadHistory(file: string, max = DEFAULT_HISTORY_SIZE): string[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-max)
    .reverse();
}

/**
 * Writes readline's history (newest first) to `file`, bounded, through a temporary file and a rename
 * so that two consoles never leave a half-written file. Failures are ignored: history is a comfort.
 */
export function saveHistory(file: string, history: readonly string[], max = DEFAULT_HISTORY_SIZE): void {
  const lines = history
    .slice(0, max)
    .filter((l) => l.trim() !== "" && !l.includes("\n"))
    .reverse();
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, lines.length > 0 ? `${lines.join("\n")}\n` : "", { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    // A read-only home or a full disk must not stop the console.
  }
}
