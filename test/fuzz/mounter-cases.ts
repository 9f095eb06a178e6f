/**
 * The mounter argv builders, seen from outside: generators of mount requests (accepted bucket
 * entries, option maps, credentials, endpoints, regions, mount points) and an oracle that parses a
 * built argv the way each FUSE client would and lists every way it is unsafe.
 */
import fc from "fast-check";
import { GEESEFS_OPTIONS, RCLONE_OPTIONS, S3FS_OPTIONS } from "../../agent/mount/mounters/index.js";
import type { MountCommand, MountOptionValue, MountRequest } from "../../agent/mount/mounters/types.js";
import type { OptionAllowlist } from "../../agent/mount/mounters/validate.js";
import { parseMountOptions } from "../../agent/reconcile/pod.js";
import { parseBuckets, type BucketEntry } from "../../shared/buckets.js";
import { MOUNTERS, podDir, type MounterName } from "../../shared/names.js";
import { ROOT, SHELL_META, anyText, bucketsEntry, dnsLabel, hex32, hostile } from "./arbitraries.js";
import { DEFAULT_PROGRAMS } from "../../agent/mount/mounters/programs.js";

// --- helpers: what a safe argv looks like, from the outside --------------------------------

/**
 * Where a path-like value is unsafe: shell/option metacharacters, `.`/`..` segments, a leading `-`.
 * For user-written relative values (bucket, prefix) no segment may start with `-` either.
 */
export function pathProblem(what: string, p: string, segments = false): string | undefined {
  if (SHELL_META.test(p)) return `${what} ${JSON.stringify(p)} holds a shell or option metacharacter`;
  if (p.split("/").some((s) => s === ".." || s === "."))
    return `${what} ${JSON.stringify(p)} has a . or .. segment`;
  if (p.startsWith("-")) return `${what} ${JSON.stringify(p)} starts with "-"`;
  if (segments && p.split(/[/:]/).some((s) => s.startsWith("-")))
    return `${what} ${JSON.stringify(p)} has a segment starting with "-"`;
  return undefined;
}

function valueFlags(allowlist: OptionAllowlist): Set<string> {
  return new Set(
    Object.entries(allowlist)
      .filter(([, k]) => k.kind !== "switch")
      .map(([n]) => n),
  );
}
function switchFlags(allowlist: OptionAllowlist): Set<string> {
  return new Set(
    Object.entries(allowlist)
      .filter(([, k]) => k.kind === "switch")
      .map(([n]) => n),
  );
}

/**
 * Parses a built argv the way the client would (flags with or without a value, then positionals)
 * and returns every way it deviates from the safe shape; empty when it is safe.
 */
export function argvProblems(mounter: MounterName, req: MountRequest, cmd: MountCommand): string[] {
  const problems: string[] = [];
  const argv = cmd.argv;
  // The program comes from configuration by absolute path, never from PATH.
  if (cmd.command !== DEFAULT_PROGRAMS[mounter]) problems.push(`command is ${cmd.command}`);
  for (const a of argv)
    if (typeof a !== "string" || a.includes("\u0000")) problems.push(`argv element ${JSON.stringify(a)}`);
  const source = req.prefix === "" ? req.bucket : undefined;
  const checkSource = (s: string | undefined, what: string): void => {
    if (s === undefined) return void problems.push(`${what} is missing`);
    const p = pathProblem(what, s.replace(/^dv:/, ""), true);
    if (p !== undefined) problems.push(p);
    if (!s.replace(/^dv:/, "").startsWith(req.bucket))
      problems.push(`${what} ${s} does not start with the bucket`);
  };
  const checkMountPoint = (m: string | undefined): void => {
    if (m !== req.mountPoint)
      problems.push(`mount point positional is ${JSON.stringify(m)}, not ${req.mountPoint}`);
    else if (pathProblem("mount point", m) !== undefined) problems.push(pathProblem("mount point", m)!);
  };
  const userNames = Object.keys(req.options);

  if (mounter === "s3fs") {
    if (argv.length !== 5 || argv[0] !== "-f" || argv[1] !== "-o")
      return [...problems, `s3fs argv shape ${JSON.stringify(argv)}`];
    const fixed = new Set([
      "url",
      "use_path_request_style",
      "endpoint",
      "passwd_file",
      "logfile",
      "allow_other",
      "umask",
      "uid",
      "gid",
      "ro",
    ]);
    const items = argv[2]!.split(",");
    for (const item of items) {
      const k = item.split("=")[0]!;
      if (!fixed.has(k) && !Object.hasOwn(S3FS_OPTIONS, k))
        problems.push(`s3fs -o item ${JSON.stringify(item)} is not allowed`);
      const v = item.includes("=") ? item.slice(item.indexOf("=") + 1) : undefined;
      // endpoint= carries the region from the Secret, which may start with "-" (REGION in
      // agent/mount/mounters/validate.ts allows it). Inside the -o list that cannot become an option.
      if (v !== undefined && v.startsWith("-") && k !== "endpoint")
        problems.push(`s3fs -o value ${JSON.stringify(item)} starts with "-"`);
      if (
        (k === "passwd_file" || k === "logfile") &&
        (v === undefined || !v.startsWith(`${req.stateDir}/`) || pathProblem(k, v) !== undefined)
      )
        problems.push(`s3fs ${k}=${v} is outside the state directory or unsafe`);
    }
    const expected =
      6 +
      (userNames.includes("umask") ? 0 : 1) +
      (req.readOnly ? 1 : 0) +
      userNames.length +
      (req.uid !== undefined && !userNames.includes("uid") ? 1 : 0) +
      (req.gid !== undefined && !userNames.includes("gid") ? 1 : 0);
    if (items.length !== expected)
      problems.push(`s3fs -o list has ${items.length} items, expected ${expected}: ${argv[2]}`);
    checkSource(argv[3], "s3fs source");
    if (source !== undefined && argv[3] !== source) problems.push(`s3fs source ${argv[3]}`);
    checkMountPoint(argv[4]);
    return problems;
  }

  if (mounter === "rclone") {
    if (argv[0] !== "--config" || argv[1] !== "/dev/null" || argv[2] !== "mount")
      return [...problems, `rclone argv shape ${JSON.stringify(argv)}`];
    checkSource(argv[3], "rclone remote");
    if (!argv[3]?.startsWith("dv:")) problems.push(`rclone remote ${argv[3]} is not on the dv: remote`);
    checkMountPoint(argv[4]);
    const values = new Set(["vfs-cache-mode", "cache-dir", "uid", "gid", ...valueFlags(RCLONE_OPTIONS)]);
    const switches = new Set(["allow-other", "read-only", ...switchFlags(RCLONE_OPTIONS)]);
    for (let i = 5; i < argv.length; i++) {
      const a = argv[i]!;
      if (!a.startsWith("--")) {
        problems.push(`rclone positional ${JSON.stringify(a)} after the mount point`);
        continue;
      }
      const name = a.slice(2);
      if (switches.has(name)) continue;
      if (!values.has(name)) {
        problems.push(`rclone flag ${a} is not allowed`);
        continue;
      }
      const v = argv[++i];
      if (v === undefined || v.startsWith("-"))
        problems.push(`rclone flag ${a} has value ${JSON.stringify(v)}`);
      if (name === "cache-dir" && (v === undefined || !v.startsWith(`${req.stateDir}/`)))
        problems.push(`rclone cache-dir ${v} is outside the state directory`);
    }
    return problems;
  }

  // geesefs: flags anywhere before the two positionals.
  const values = new Set(["endpoint", "region", "o", "uid", "gid", ...valueFlags(GEESEFS_OPTIONS)]);
  const switches = new Set(["f", ...switchFlags(GEESEFS_OPTIONS)]);
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("-")) {
      positionals.push(a);
      continue;
    }
    const name = a.replace(/^--?/, "");
    if (switches.has(name)) continue;
    if (!values.has(name)) {
      problems.push(`geesefs flag ${a} is not allowed`);
      continue;
    }
    const v = argv[++i];
    if (v === undefined) problems.push(`geesefs flag ${a} has no value`);
    // The region (from the Secret) may start with "-"; as the value of --region it is taken
    // verbatim by Go's flag parsing, so it cannot become a flag.
    else if (v.startsWith("-") && name !== "region")
      problems.push(`geesefs flag ${a} has value ${JSON.stringify(v)}`);
    if (name === "o" && v !== "allow_other" && v !== "ro") problems.push(`geesefs -o ${v} is not allowed`);
  }
  if (positionals.length !== 2) problems.push(`geesefs positionals ${JSON.stringify(positionals)}`);
  checkSource(positionals[0], "geesefs source");
  checkMountPoint(positionals[1]);
  return problems;
}

// --- generators for the builders ----------------------------------------------------------

const ALL_OPTION_NAMES = [
  ...new Set([...Object.keys(S3FS_OPTIONS), ...Object.keys(RCLONE_OPTIONS), ...Object.keys(GEESEFS_OPTIONS)]),
];
const optionName = (mounter: MounterName): fc.Arbitrary<string> =>
  fc.oneof(
    { arbitrary: fc.constantFrom(...Object.keys(allowlistOf(mounter))), weight: 12 },
    { arbitrary: fc.constantFrom(...ALL_OPTION_NAMES), weight: 2 },
    {
      arbitrary: fc.constantFrom(
        "allow_root",
        "allow_other",
        "url",
        "passwd_file",
        "endpoint",
        "config",
        "ro",
        "nonempty",
        "o",
        "-o",
        "__proto__",
        "constructor",
        "hasOwnProperty",
        "cache-dir",
        "daemon",
        "uid ",
        "UID",
      ),
      weight: 2,
    },
    { arbitrary: anyText, weight: 1 },
  );
const optionValue: fc.Arbitrary<MountOptionValue> = fc.oneof(
  { arbitrary: fc.constant<true>(true), weight: 3 },
  {
    arbitrary: fc.constantFrom(
      "true",
      "0022",
      "022",
      "755",
      "1000",
      "65534",
      "16M",
      "10G",
      "30s",
      "1h30m",
      "500ms",
      "writes",
      "full",
      "off",
      "1",
      "2",
      "0",
    ),
    weight: 10,
  },
  { arbitrary: fc.stringMatching(/^[0-9A-Za-z._]{1,8}$/), weight: 2 },
  { arbitrary: hostile, weight: 2 },
  { arbitrary: anyText, weight: 1 },
);
/** Options as a map, built so that `__proto__` is an own key like any other. */
const optionsMap = (mounter: MounterName): fc.Arbitrary<Record<string, MountOptionValue>> =>
  fc.oneof(
    fc
      .array(fc.tuple(optionName(mounter), optionValue), { maxLength: 3 })
      .map((kv) => Object.fromEntries(kv) as Record<string, MountOptionValue>),
    // The path an annotation takes: dynamic-volumes/mount-options through the agent's parser.
    fc
      .array(fc.tuple(optionName(mounter), fc.option(optionValue.map(String), { nil: undefined })), {
        maxLength: 3,
      })
      .map((kv) => kv.map(([k, v]) => (v === undefined ? k : `${k}=${v}`)).join(","))
      .map((text) => {
        const parsed = parseMountOptions(text);
        return "options" in parsed ? parsed.options : {};
      }),
  );

/** Credentials with at least 12 random characters, so that any appearance in argv is a leak. */
const credential = fc
  .tuple(
    fc.string({
      unit: fc.constantFrom(..."ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789/+"),
      minLength: 12,
      maxLength: 40,
    }),
    fc.oneof(
      { arbitrary: fc.constant(""), weight: 6 },
      {
        arbitrary: fc.constantFrom(
          ":",
          ",allow_other",
          " -o allow_root",
          "%2F",
          "=",
          "@host",
          "\n",
          "ü/ä",
          "&x=y",
          "'\"$(id)",
        ),
        weight: 4,
      },
    ),
  )
  .map(([a, b]) => a + b);

const endpoint = (creds: { accessKeyID: string; secretAccessKey: string }): fc.Arbitrary<string> =>
  fc.oneof(
    {
      arbitrary: fc.constantFrom(
        "http://127.0.0.1:9000",
        "https://s3.example.com",
        "https://s3.example.com/base",
        "http://[::1]:9000",
        "https://minio.minio.svc:443",
      ),
      weight: 20,
    },
    fc.constantFrom(
      "ftp://h",
      "http://h?x=1",
      "http://h#x",
      "http://h,allow_other",
      "-o x",
      "http://h/ a",
      "file:///etc/passwd",
      "http://h/$(id)",
      "HTTP://H",
      "http://h\n",
      "javascript:alert(1)",
      "",
    ),
    // Credentials as user info must be refused: they would land in argv.
    fc.constant(
      `http://${encodeURIComponent(creds.accessKeyID)}:${encodeURIComponent(creds.secretAccessKey)}@s3.example.com`,
    ),
    fc.constant(`https://${encodeURIComponent(creds.secretAccessKey)}@s3.example.com`),
  );

const region = fc.oneof(
  { arbitrary: fc.constantFrom("", "us-east-1", "eu-west-3"), weight: 6 },
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/), weight: 2 },
  { arbitrary: hostile, weight: 1 },
);

const mountPointFor = (id: string, name: string): fc.Arbitrary<string> =>
  fc.oneof(
    { arbitrary: fc.constant(`${podDir(ROOT, id)}/${name}`), weight: 16 },
    {
      arbitrary: fc.constantFrom(
        "/",
        "relative/x",
        "/a/../b",
        "/a/./b",
        "/a,b",
        "/a b",
        "/a=b",
        "/-o",
        "//x",
        `/${"p".repeat(5000)}`,
      ),
      weight: 1,
    },
    { arbitrary: anyText.map((t) => `/${t}`), weight: 1 },
  );

export interface BuilderCase {
  readonly mounter: MounterName;
  readonly entry: BucketEntry;
  readonly req: MountRequest;
}

/** An accepted entry: the first one parsed from a generated entry, or a plain valid one. */
const acceptedEntry: fc.Arbitrary<BucketEntry> = fc
  .tuple(
    bucketsEntry,
    fc.record({
      name: dnsLabel,
      bucket: fc.stringMatching(/^[a-z0-9][a-z0-9.-]{1,12}[a-z0-9]$/).filter((b) => !b.includes("..")),
      prefix: fc.constantFrom("", "a", "x/y", "@b+c/d.e_f"),
      readOnly: fc.boolean(),
    }),
  )
  .map(([text, fallback]) => parseBuckets(text).entries[0] ?? fallback);

export const builderCase: fc.Arbitrary<BuilderCase> = fc
  .record({
    mounter: fc.constantFrom(...MOUNTERS),
    entry: acceptedEntry,
    id: hex32,
    accessKeyID: credential,
    secretAccessKey: credential,
  })
  .chain((c) => {
    const entry = c.entry;
    const credentials = { accessKeyID: c.accessKeyID, secretAccessKey: c.secretAccessKey };
    return fc
      .record({
        mountPoint: mountPointFor(c.id, entry.name),
        stateDir: fc.oneof(
          { arbitrary: fc.constant(`${ROOT}/agent/mounts/${c.id}/${entry.name}`), weight: 16 },
          { arbitrary: fc.constantFrom("/", "/x/../y", "/a,b", "rel"), weight: 1 },
        ),
        endpoint: endpoint(credentials),
        region,
        uid: fc.option(
          fc.oneof(
            { arbitrary: fc.integer({ min: 0, max: 70_000 }), weight: 8 },
            { arbitrary: fc.constantFrom(-1, 2 ** 32, 1.5), weight: 1 },
          ),
          { nil: undefined },
        ),
        gid: fc.option(fc.integer({ min: 0, max: 70_000 }), { nil: undefined }),
        options: optionsMap(c.mounter),
      })
      .map(({ uid, gid, ...r }) => ({
        mounter: c.mounter,
        entry,
        req: {
          bucket: entry.bucket,
          prefix: entry.prefix,
          readOnly: entry.readOnly,
          credentials,
          ...r,
          ...(uid !== undefined ? { uid } : {}),
          ...(gid !== undefined ? { gid } : {}),
        },
      }));
  });

export function allowlistOf(m: MounterName): OptionAllowlist {
  return m === "s3fs" ? S3FS_OPTIONS : m === "rclone" ? RCLONE_OPTIONS : GEESEFS_OPTIONS;
}

/** Every failed check for one built command; empty when it is safe. */
export function commandProblems(c: BuilderCase, cmd: MountCommand): string[] {
  const problems = argvProblems(c.mounter, c.req, cmd);
  for (const k of Object.keys(c.req.options))
    if (!Object.hasOwn(allowlistOf(c.mounter), k))
      problems.push(`option ${JSON.stringify(k)} is off the allowlist but was accepted`);
  for (const secret of [c.req.credentials.accessKeyID, c.req.credentials.secretAccessKey])
    for (const form of new Set([secret, encodeURIComponent(secret)]))
      for (const a of [cmd.command, ...cmd.argv])
        if (a.includes(form))
          problems.push(`a credential appears in argv element ${JSON.stringify(a.slice(0, 80))}`);
  for (const f of cmd.files)
    if (
      f.mode !== 0o600 ||
      !f.path.startsWith(`${c.req.stateDir}/`) ||
      pathProblem("file", f.path) !== undefined
    )
      problems.push(`file ${f.path} (mode ${f.mode.toString(8)}) is unsafe`);
  if (cmd.cacheDir !== undefined && !cmd.cacheDir.startsWith(`${c.req.stateDir}/`))
    problems.push(`cacheDir ${cmd.cacheDir}`);
  return problems;
}
