/**
 * Writing PEM files for a server to read: each file is written to a temporary name in the same
 * directory and renamed over the target, so a watcher that reloads on change never reads half a file.
 * Private keys get mode 0600; certificates 0644.
 */
import { chmod, mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError } from "../shared/errors.js";

export interface PemFile {
  /** File name inside the directory, e.g. `tls.key`. */
  readonly name: string;
  readonly content: string;
  /** True for private keys: mode 0600. */
  readonly secret: boolean;
}

/**
 * Writes the files into `dir` (created when missing), one after the other in the order given.
 * Returns the paths written.
 */
export async function writePemFiles(dir: string, files: readonly PemFile[]): Promise<string[]> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new AppError("InvalidArgument", `cannot create the directory "${dir}": ${errno(e)}`, { cause: e });
  }
  const written: string[] = [];
  for (const f of files) {
    const path = join(dir, f.name);
    const tmp = join(dir, `.${f.name}.${process.pid}.tmp`);
    const mode = f.secret ? 0o600 : 0o644;
    try {
      await writeFile(tmp, f.content, { mode });
      // writeFile's mode is filtered by the umask and ignored for an existing file; set it exactly.
      await chmod(tmp, mode);
      await rename(tmp, path);
    } catch (e) {
      throw new AppError("InvalidArgument", `cannot write "${path}": ${errno(e)}`, { cause: e });
    }
    written.push(path);
  }
  return written;
}

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}
