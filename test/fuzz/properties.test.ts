/**
 * Property-based tests (fast-check, fixed seeds) for the pure cores that hostile input reaches
 * first: the `dynamic-volumes/buckets` grammar, the FUSE argv builders, and the webhook's decision.
 * Counts scale with DV_FUZZ_RUNS and the seed can be replaced with DV_FUZZ_SEED (see fuzz-config.ts).
 */
import { expect } from "chai";
import fc from "fast-check";
import { posix } from "node:path";
import { buildMount } from "../../agent/mount/mounters/index.js";
import type { MountCommand, MountRequest } from "../../agent/mount/mounters/types.js";
import { MAX_BUCKET_ENTRIES, formatBuckets, parseBuckets } from "../../shared/buckets.js";
import { isAppError } from "../../shared/errors.js";
import { ANNOTATIONS, MOUNTERS, VOLUME_NAME, podDir } from "../../shared/names.js";
import { mutatePod, type MutateConfig } from "../../webhook/mutate.js";
import { decodeAdmissionReview } from "../../webhook/review.js";
import {
  Deep,
  ROOT,
  anyText,
  bodyText,
  bucketsEntry,
  bucketsValue,
  dnsLabel,
  hostPathNear,
  hostileJsonValue,
  mangledPath,
  materialize,
  paths,
  podArb,
  relationOf,
  withAt,
  type Json,
} from "./arbitraries.js";
import { announce, fuzzRuns, fuzzSeed, fuzzTimeoutMs } from "./fuzz-config.js";
import { allowlistOf, builderCase, commandProblems, pathProblem } from "./mounter-cases.js";
import { applyJsonPatch } from "../support/patch.js";

const SEED = fuzzSeed(20_240_611);
const RUNS = fuzzRuns(2000);
const params = (offset: number): fc.Parameters<unknown> => ({ seed: SEED + offset, numRuns: RUNS });

const key = Buffer.from("property-test-signing-key-0123456789");
const cfgFor = (root: string): MutateConfig => ({ root, defaultMountPath: "/datasets", signingKey: key });
let minted = 0;
const mintId = (): string => (++minted).toString(16).padStart(32, "0");

// --- the tests -----------------------------------------------------------------------------

describe("fuzz: properties of the pure cores", function () {
  this.timeout(fuzzTimeoutMs(30_000));

  before(() => announce("properties", SEED, { runsPerProperty: RUNS }));

  describe("the dynamic-volumes/buckets grammar (parseBuckets)", () => {
    const anyAnnotation = fc.oneof(
      bucketsValue,
      fc.string({ unit: "binary", maxLength: 200 }),
      fc.array(bucketsEntry, { maxLength: 80 }).map((e) => e.join(" ,")),
    );

    it("never throws, and accepts only safe names, buckets and prefixes", () => {
      fc.assert(
        fc.property(anyAnnotation, (value) => {
          const { entries, errors } = parseBuckets(value);
          expect(entries.length).to.be.at.most(MAX_BUCKET_ENTRIES);
          expect(new Set(entries.map((e) => e.name)).size, "names are unique").to.equal(entries.length);
          for (const e of errors) expect(e.message).to.be.a("string").and.not.equal("");
          const dir = podDir(ROOT, "0".repeat(32));
          for (const e of entries) {
            const shown = JSON.stringify(e);
            expect(e.name, shown).to.match(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
            expect(pathProblem("bucket", e.bucket, true), shown).to.equal(undefined);
            expect(e.bucket, shown).not.to.include("/");
            expect(e.bucket, shown).not.to.include("..");
            if (e.prefix !== "") {
              expect(pathProblem("prefix", e.prefix, true), shown).to.equal(undefined);
              expect(e.prefix.split("/"), shown).not.to.include("");
              expect(e.prefix.length, shown).to.be.at.most(512);
            }
            // The mount point stays one level under the pod's directory.
            const mp = posix.join(dir, e.name);
            expect(posix.dirname(mp), shown).to.equal(dir);
            expect(posix.basename(mp), shown).to.equal(e.name);
          }
        }),
        params(1),
      );
    });

    it("round-trips: formatBuckets(parseBuckets(x).entries) parses back to the same entries", () => {
      fc.assert(
        fc.property(anyAnnotation, (value) => {
          const first = parseBuckets(value).entries;
          const text = formatBuckets(first);
          const again = parseBuckets(text);
          expect(again.errors, text).to.deep.equal([]);
          expect(again.entries, text).to.deep.equal(first);
          expect(formatBuckets(again.entries)).to.equal(text);
        }),
        params(2),
      );
    });
  });

  describe("the mounter argv builders (buildMount for s3fs, rclone, geesefs)", () => {
    it("either refuse with InvalidArgument or build an argv with no injection, no escape and no credential", () => {
      let built = 0;
      fc.assert(
        fc.property(builderCase, (c) => {
          let cmd: MountCommand;
          try {
            cmd = buildMount(c.mounter, c.req);
          } catch (e) {
            if (!isAppError(e) || e.code !== "InvalidArgument") throw e;
            return;
          }
          built++;
          const problems = commandProblems(c, cmd);
          expect(problems, JSON.stringify({ argv: cmd.argv })).to.deep.equal([]);
        }),
        params(3),
      );
      // The generators must reach the builders' success path often enough to mean something.
      expect(built, "commands built").to.be.greaterThan(RUNS / 5);
    });

    it("refuse every option name outside the mounter's allowlist", () => {
      fc.assert(
        fc.property(
          fc.constantFrom(...MOUNTERS),
          fc.oneof(
            anyText,
            fc.constantFrom("allow_root", "-o", "__proto__", "constructor", "url", "o", "config"),
          ),
          (mounter, name) => {
            fc.pre(!Object.hasOwn(allowlistOf(mounter), name));
            const req: MountRequest = {
              bucket: "data",
              prefix: "",
              readOnly: false,
              mountPoint: `${podDir(ROOT, "a".repeat(32))}/data`,
              endpoint: "http://127.0.0.1:9000",
              region: "",
              credentials: { accessKeyID: "AKIAEXAMPLE", secretAccessKey: "secretsecret" },
              options: Object.fromEntries([[name, "1"]]),
              stateDir: `${ROOT}/agent/mounts/x/data`,
            };
            expect(() => buildMount(mounter, req)).to.throw(/not allowed/);
          },
        ),
        params(4),
      );
    });
  });

  describe("the webhook's decision (mutatePod)", () => {
    /**
     * A pod from the generator with one member replaced by a hostile JSON value. It stays lazy
     * (Deep, Huge) so that a counterexample prints small; the property parses the real JSON.
     */
    const hostilePod = fc
      .tuple(podArb, fc.nat(), hostileJsonValue, fc.boolean())
      .map(([pod, n, value, remove]) => {
        const all = paths(pod);
        const target = all[n % all.length] ?? [];
        return withAt(pod, target, remove && n % 3 === 0 ? undefined : value);
      });

    it("never throws for any JSON value as the pod", () => {
      // BUG-1 and BUG-2 (below) were found here; shrinking names the minimal pod.
      fc.assert(
        fc.property(
          fc.oneof(fc.jsonValue(), hostilePod),
          fc.constantFrom("team-a", "", "x".repeat(300)),
          (lazy, ns) => {
            const pod = JSON.parse(bodyText(lazy) ?? "null") as unknown;
            const r = mutatePod(pod, ns, cfgFor(ROOT), mintId);
            expect(["patched", "unchanged", "skipped", "denied"]).to.include(r.kind);
          },
        ),
        // Shrinking deep counterexamples takes tens of seconds: report the first one as found.
        { ...params(5), endOnFailure: true },
      );
    });

    it("denies every hostPath at, inside or above the root, however the path is written", () => {
      const roots = fc.constantFrom(ROOT, "/dv", "/srv/a/b-c");
      const c = roots.chain((root) =>
        fc.record({
          root: fc.constant(root),
          path: hostPathNear(root).filter((p) => relationOf(p, root) !== "unrelated"),
          name: fc.oneof(dnsLabel, fc.constant(VOLUME_NAME)),
          type: fc.constantFrom(undefined, "", "Directory", "DirectoryOrCreate", "Socket"),
          pod: podArb.map(materialize),
          position: fc.nat(),
          injectFirst: fc.boolean(),
          optOut: fc.boolean(),
          namespace: fc.constantFrom("team-a", "team-b"),
        }),
      );
      fc.assert(
        fc.property(c, (x) => {
          const cfg = cfgFor(x.root);
          let pod = x.pod as Json;
          // Sometimes start from a pod that carries our own verified injection (reinvocation).
          if (x.injectFirst) {
            const first = mutatePod(pod, x.namespace, cfg, mintId);
            if (first.kind === "patched") pod = applyJsonPatch(pod, first.patch);
          }
          if (x.optOut) pod = withAt(pod, ["metadata", "annotations", ANNOTATIONS.inject], "false") as Json;
          const spec = (pod.spec ?? {}) as Json;
          const volumes = Array.isArray(spec.volumes) ? [...(spec.volumes as unknown[])] : [];
          const hostPath = x.type === undefined ? { path: x.path } : { path: x.path, type: x.type };
          volumes.splice(x.position % (volumes.length + 1), 0, { name: x.name, hostPath });
          pod = withAt(pod, ["spec", "volumes"], volumes) as Json;
          const r = mutatePod(pod, x.namespace, cfg, mintId);
          expect(r.kind, `${x.path} under root ${x.root}: ${JSON.stringify(r).slice(0, 300)}`).to.equal(
            "denied",
          );
        }),
        params(6),
      );
    });

    it("does not deny a hostPath beside the root (a sibling that shares its prefix)", () => {
      fc.assert(
        fc.property(
          fc
            .constantFrom(
              `${ROOT}-x`,
              `${ROOT}x/pods`,
              ROOT.slice(0, -1),
              "/var/lib/docker",
              "/data",
              `${ROOT}2`,
            )
            .chain(mangledPath),
          (path) => {
            const pod = {
              metadata: { name: "p" },
              spec: {
                containers: [{ name: "c", image: "busybox" }],
                volumes: [{ name: "h", hostPath: { path } }],
              },
            };
            expect(mutatePod(pod, "team-a", cfgFor(ROOT), mintId).kind, path).to.equal("patched");
          },
        ),
        { ...params(7), numRuns: Math.min(RUNS, 200) },
      );
    });
  });

  // Minimal reproducers of bugs the properties above found. They fail until the bug is fixed.
  describe("regressions found by fuzzing", () => {
    it("BUG-1: mutatePod does not throw when a colliding volumeMount's name is {toString: 1}", () => {
      const pod = JSON.parse(
        '{"spec":{"containers":[{"name":"c","volumeMounts":[{"name":{"toString":1},"mountPath":"/datasets"}]}]}}',
      ) as unknown;
      // webhook/mutate.ts builds the denial message with String(m.name), which throws for this value.
      expect(() => mutatePod(pod, "team-a", cfgFor(ROOT), mintId)).not.to.throw();
    });

    it("BUG-2: mutatePod does not throw when dynamic-volumes/mounter is a deeply nested array", () => {
      const pod = JSON.parse(
        bodyText({
          metadata: { annotations: { [ANNOTATIONS.mounter]: new Deep(10_000, "array") } },
          spec: { containers: [{ name: "c" }] },
        }),
      ) as unknown;
      // annotationWarnings() calls JSON.stringify on the untrusted value (also for dynamic-volumes/secret).
      expect(() => mutatePod(pod, "team-a", cfgFor(ROOT), mintId)).not.to.throw();
    });

    it("BUG-3: decodeAdmissionReview throws AppError(BadRequest), not RangeError, for a deeply nested apiVersion", () => {
      const body = JSON.parse(
        bodyText({ apiVersion: new Deep(10_000, "array"), request: { uid: "u" } }),
      ) as unknown;
      // review.ts quotes the bad value with JSON.stringify; the server turns the RangeError into a 500.
      let thrown: unknown;
      try {
        decodeAdmissionReview(body);
      } catch (e) {
        thrown = e;
      }
      expect(isAppError(thrown), String(thrown)).to.equal(true);
    });
  });
});
