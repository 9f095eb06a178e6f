/** What the process tests ask of /proc, and of a promise that must fail. */
import { readFile } from "node:fs/promises";

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
