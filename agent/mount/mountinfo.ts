/**
 * Parsing `/proc/<pid>/mountinfo` (proc(5), "mountinfo"): the agent's view of actual state.
 *
 *     36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *     (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
 *
 * Pure: text in, records out. The caller reads the file.
 */
import { AppError } from "../../shared/errors.js";

/** One line of mountinfo. Path-like fields have the kernel's octal escapes (`\040`…) decoded. */
export interface MountInfo {
  /** (1) Unique id of the mount (may be reused after unmount). */
  readonly mountId: number;
  /** (2) Id of the parent mount; equals `mountId` for the root of the namespace's tree. */
  readonly parentId: number;
  /** (3) `st_dev` of files on this filesystem. */
  readonly major: number;
  readonly minor: number;
  /** (4) Directory of the filesystem that forms the root of this mount (`/` unless a bind of a subtree). */
  readonly root: string;
  /** (5) Mount point, relative to the process's root. */
  readonly mountPoint: string;
  /** (6) Per-mount options, e.g. `["rw", "nosuid", "relatime"]`. */
  readonly mountOptions: readonly string[];
  /** (7) Optional fields as written, e.g. `["shared:1"]`, `["master:3"]`, `["shared:5", "master:3"]`. */
  readonly optionalFields: readonly string[];
  /** Peer group from `shared:N`, when the mount is shared. */
  readonly sharedGroup?: number;
  /** Master peer group from `master:N`, when the mount is a slave. */
  readonly masterGroup?: number;
  /** (9) Filesystem type, with subtype for FUSE: `fuse.s3fs`, `fuse.rclone`, `fuse.geesefs`. */
  readonly fsType: string;
  /** (10) Filesystem-specific source, e.g. `/dev/sda1`, `s3fs`, `dv{ab12}:bucket`. */
  readonly source: string;
  /** (11) Per-superblock options. */
  readonly superOptions: readonly string[];
}

/** Mount propagation type of a mount, as `findmnt -o PROPAGATION` would name it. */
export type Propagation = "shared" | "slave" | "private" | "unbindable";

/** Decodes the kernel's `\ooo` escapes (space, tab, newline, backslash are written this way). */
export function unescapeMountinfo(field: string): string {
  if (!field.includes("\\")) return field;
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function parseIntField(value: string | undefined, what: string, lineNo: number): number {
  if (value === undefined || !/^\d+$/.test(value)) {
    throw new AppError("Internal", `mountinfo line ${lineNo}: ${what} "${value ?? ""}" is not a number`);
  }
  return Number(value);
}

function groupOf(fields: readonly string[], tag: "shared" | "master"): number | undefined {
  for (const f of fields) {
    if (f.startsWith(`${tag}:`)) {
      const n = f.slice(tag.length + 1);
      if (/^\d+$/.test(n)) return Number(n);
    }
  }
  return undefined;
}

/** Parses one mountinfo line. Throws `AppError("Internal")` when the line is malformed. */
export function parseMountinfoLine(line: string, lineNo = 1): MountInfo {
  const fields = line.split(" ");
  const sep = fields.indexOf("-", 6);
  if (fields.length < 10 || sep < 0 || fields.length < sep + 4) {
    throw new AppError("Internal", `mountinfo line ${lineNo} is malformed: "${line.slice(0, 200)}"`);
  }
  const devParts = (fields[2] ?? "").split(":");
  if (devParts.length !== 2) {
    throw new AppError(
      "Internal",
      `mountinfo line ${lineNo}: device "${fields[2] ?? ""}" is not major:minor`,
    );
  }
  const optionalFields = fields.slice(6, sep);
  const sharedGroup = groupOf(optionalFields, "shared");
  const masterGroup = groupOf(optionalFields, "master");
  return {
    mountId: parseIntField(fields[0], "mount id", lineNo),
    parentId: parseIntField(fields[1], "parent id", lineNo),
    major: parseIntField(devParts[0], "major", lineNo),
    minor: parseIntField(devParts[1], "minor", lineNo),
    root: unescapeMountinfo(fields[3] ?? ""),
    mountPoint: unescapeMountinfo(fields[4] ?? ""),
    mountOptions: (fields[5] ?? "").split(",").filter((o) => o !== ""),
    optionalFields,
    ...(sharedGroup !== undefined ? { sharedGroup } : {}),
    ...(masterGroup !== undefined ? { masterGroup } : {}),
    fsType: unescapeMountinfo(fields[sep + 1] ?? ""),
    source: unescapeMountinfo(fields[sep + 2] ?? ""),
    // The super options are the last field; escaped spaces keep it a single field.
    superOptions: fields
      .slice(sep + 3)
      .join(" ")
      .split(",")
      .filter((o) => o !== ""),
  };
}

/**
 * Parses the whole mountinfo text, in the kernel's order (parents before children, older before
 * newer on the same mount point). Blank lines are skipped; a malformed line throws
 * `AppError("Internal")` rather than hiding a mount from the reconciler.
 */
export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    out.push(parseMountinfoLine(line, i + 1));
  });
  return out;
}

/** The kernel's escaping of a path in mountinfo: space, tab, newline and backslash as `\ooo`. */
export function escapeMountinfo(path: string): string {
  return path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

/**
 * The mounts whose mount point is `dir` or lies below it, in the kernel's order. Only lines that
 * contain `dir` are parsed: on a node with hundreds of mounts, the agent asks this many times a
 * second, and parsing every line each time was most of its work and garbage.
 */
export function parseMountinfoUnder(text: string, dir: string): MountInfo[] {
  const base = normalizeDir(dir);
  const prefix = base === "/" ? "/" : `${base}/`;
  const needle = ` ${escapeMountinfo(base)}`;
  const out: MountInfo[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.includes(needle)) return;
    const m = parseMountinfoLine(line, i + 1);
    if (m.mountPoint === base || m.mountPoint.startsWith(prefix)) out.push(m);
  });
  return out;
}

/** `dir` without trailing slashes (`/` stays `/`). */
function normalizeDir(dir: string): string {
  return dir.length > 1 ? dir.replace(/\/+$/, "") || "/" : dir;
}

function depth(path: string): number {
  return path === "/" ? 0 : path.split("/").length - 1;
}

/**
 * Mounts whose mount point is `dir` itself or lies below it, deepest first; on the same mount point
 * the newest (topmost) mount comes first. That is the order in which to unmount them.
 */
export function mountsUnder(records: readonly MountInfo[], dir: string): MountInfo[] {
  const base = normalizeDir(dir);
  const prefix = base === "/" ? "/" : `${base}/`;
  return records
    .map((r, index) => ({ r, index }))
    .filter(({ r }) => r.mountPoint === base || r.mountPoint.startsWith(prefix))
    .sort((a, b) => depth(b.r.mountPoint) - depth(a.r.mountPoint) || b.index - a.index)
    .map(({ r }) => r);
}

/**
 * The mount whose mount point is exactly `path`; when several are stacked there, the topmost (the
 * one a lookup of `path` reaches). Undefined when `path` is not a mount point.
 */
export function findMount(records: readonly MountInfo[], path: string): MountInfo | undefined {
  const p = normalizeDir(path);
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i];
    if (r !== undefined && r.mountPoint === p) return r;
  }
  return undefined;
}

/** The mount that contains `path`: the topmost mount with the longest mount point that is a prefix of it. */
export function mountContaining(records: readonly MountInfo[], path: string): MountInfo | undefined {
  const p = normalizeDir(path);
  let best: MountInfo | undefined;
  for (const r of records) {
    const mp = r.mountPoint;
    const inside = mp === "/" || p === mp || p.startsWith(`${mp}/`);
    if (inside && (best === undefined || mp.length >= best.mountPoint.length)) best = r;
  }
  return best;
}

/** True for FUSE filesystems: `fuse`, `fuseblk` and `fuse.<subtype>` (`fuse.s3fs`, `fuse.rclone`…). */
export function isFuse(record: MountInfo): boolean {
  return record.fsType === "fuse" || record.fsType === "fuseblk" || record.fsType.startsWith("fuse.");
}

/**
 * The propagation type. A mount that is both shared and a slave (`shared:N master:M`) reports
 * `shared`: what matters to the agent is that its own mounts propagate out.
 */
export function propagationOf(record: MountInfo): Propagation {
  if (record.sharedGroup !== undefined) return "shared";
  if (record.masterGroup !== undefined) return "slave";
  if (record.optionalFields.includes("unbindable")) return "unbindable";
  return "private";
}

/** True when the mount itself is read-only (`ro` in the per-mount options). */
export function isReadOnly(record: MountInfo): boolean {
  return record.mountOptions.includes("ro");
}
