/** What the process and end-to-end tests ask of /proc, of a promise that must fail, and of time. */
import { expect } from "chai";
import { readdir, readFile } from "node:fs/promises";
import { AppError } from "../../shared/errors.js";

/** Running (a zombie whose parent died may linger unreaped when PID 1 does not reap: it counts as dead). */
export async function alive(pid: number): Promise<boolean> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ")[0] !== "Z";
  } catch {
    return false;
  }
}

export async function processGroupOf(pid: number): Promise<number> {
  // /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces, so cut after ')'.
  const text = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[2]);
}

/** The rejection of `p`; throws when it resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

/** Live (not zombie) processes with an argument that `matches`: a FUSE client names where it mounts. */
export async function pidsWithArg(matches: (arg: string) => boolean): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    // Zombies have an empty command line already; alive() says so for the rest.
    if (cmdline.split("\0").some(matches) && (await alive(Number(entry)))) pids.push(Number(entry));
  }
  return pids;
}

/**
 * Resolves with the first value of `probe` that is neither undefined nor false, polling every
 * `intervalMs`; a probe that throws counts as not yet, and its last error is in the timeout's message.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The `AppError` that `p` rejects with; fails the test when it resolves or rejects with anything else. */
export async function appFailure(p: Promise<unknown>): Promise<AppError> {
  const e = await rejection(p);
  expect(e).to.be.instanceOf(AppError);
  return e as AppError;
}
