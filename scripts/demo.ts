/**
 * The local demo: a bucket appears inside an already-running container, a write from inside lands
 * in S3, and the bucket disappears again, all without restarting the container. Real parts only:
 * an S3 server on loopback, a runc container whose volume went through the webhook's patch, the
 * mounter running real FUSE clients, and the agent in local mode as an unprivileged uid. The agent is
 * restarted while a loop in the container keeps reading. Cleans up on exit and on Ctrl-C.
 */
import { readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { LocalNode } from "./lib/local-node.js";
import { PodLoop, readerScript } from "./lib/pod-loop.js";

const MOUNTER = process.env.DV_DEMO_MOUNTER ?? "s3fs";
/** `hostPath` (the default) or `csi`: README "Two modes". */
const VOLUME_MODE = process.env.DV_DEMO_VOLUME_MODE ?? "hostPath";
const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
let stepStart = performance.now();
function step(title: string): void {
  stepStart = performance.now();
  console.log(`\n${bold(`== ${title}`)}`);
}
function done(what: string): void {
  console.log(`   ${what} (${(performance.now() - stepStart).toFixed(0)} ms)`);
}
function show(text: string): void {
  for (const line of text.trimEnd().split("\n")) console.log(`   | ${line}`);
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<number> {
  const t0 = performance.now();
  while (!(await probe())) {
    if (performance.now() - t0 > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - t0;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error("the demo needs root (FUSE, mount namespaces, runc); run it as root");
  if (VOLUME_MODE !== "hostPath" && VOLUME_MODE !== "csi")
    throw new Error(`DV_DEMO_VOLUME_MODE "${VOLUME_MODE}" is not one of hostPath, csi`);
  step("1. start a local S3 server with a seeded bucket");
  const node = await LocalNode.start({
    prefix: "dv-demo-",
    volumeMode: VOLUME_MODE,
    buckets: {
      "imagenet-mini": {
        "README.txt": "a tiny dataset\n",
        "train/cat-001.txt": "meow\n",
        "train/dog-001.txt": "woof\n",
      },
      results: {},
    },
  });
  let stopping = false;
  const cleanup = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    step("cleanup: agent, mounter, container, mounts, S3 server, work directory");
    await node.stop();
    done("everything removed");
  };
  process.once("SIGINT", () => void cleanup().finally(() => process.exit(130)));
  process.once("SIGTERM", () => void cleanup().finally(() => process.exit(143)));
  try {
    done(`S3 at ${node.s3.endpoint}, buckets imagenet-mini (3 objects) and results (empty)`);
    await node.writeSecret("team-a");

    step("2. admit pod team-a/trainer through the webhook's patch, and start it as a runc container");
    const pod = await node.addPod({ namespace: "team-a", name: "trainer", mounter: MOUNTER });
    done(
      pod.csiTarget === undefined
        ? `pod directory ${pod.hostDir} mounted read-only at /datasets (HostToContainer = rbind,rslave)`
        : `CSI mode: the kubelet stand-in published ${pod.hostDir} (the pod's uid) at ${pod.csiTarget}, mounted read-only at /datasets (HostToContainer = rbind,rslave)`,
    );
    show(
      (await node.exec("trainer", ["sh", "-c", "grep ' /datasets ' /proc/self/mountinfo; ls -la /datasets"]))
        .stdout,
    );

    step(
      `3. start the mounter (root, Bidirectional mount namespace) and the agent (no privilege), client ${MOUNTER}`,
    );
    await node.startAgent();
    const status = await readFile(`/proc/${node.agent!.pid}/status`, "utf8");
    const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(status)?.[1] ?? "?";
    done(
      `mounter pid ${node.mounter!.pid} (uid 0); agent pid ${node.agent!.pid} (uid ${field("Uid")}, CapEff ${field("CapEff")})`,
    );

    step('4. annotate the running pod: dynamic-volumes/buckets = "data=imagenet-mini/train:ro, out=results"');
    const t0 = performance.now();
    await node.setBuckets("trainer", "data=imagenet-mini/train:ro, out=results");
    const readable = await waitFor(
      "the bucket inside the container",
      async () => (await node.exec("trainer", ["cat", "/datasets/data/cat-001.txt"])).stdout === "meow\n",
    );
    console.log(
      `   annotation change → data readable inside the running container: ${(performance.now() - t0).toFixed(0)} ms (polled for ${readable.toFixed(0)} ms)`,
    );
    show((await node.exec("trainer", ["ls", "-l", "/datasets", "/datasets/data"])).stdout);
    show(`status: ${JSON.stringify(await node.status("trainer"), null, 1).replace(/\n\s*/g, " ")}`);

    step("5. write from inside the container, and read it back from S3");
    await waitFor("out mounted", async () => (await node.status("trainer")).out?.state === "mounted");
    const w = await node.exec("trainer", [
      "sh",
      "-c",
      "echo 'accuracy=0.93' > /datasets/out/run-1.txt && echo written",
    ]);
    show(w.stdout + w.stderr);
    const landed = await waitFor(
      "the object in S3",
      async () => (await node.s3.get("results", "run-1.txt")) === "accuracy=0.93\n",
    );
    done(
      `s3://results/run-1.txt = ${JSON.stringify(await node.s3.get("results", "run-1.txt"))}, seen in S3 after ${landed.toFixed(0)} ms`,
    );
    const ro = await node.exec("trainer", ["sh", "-c", "echo x > /datasets/data/new.txt"]);
    console.log(
      `   writing to the read-only mount fails as it should: ${ro.stderr.trim() || `exit ${ro.code}`}`,
    );

    step('6. remove "data" from the annotation: it leaves the running container');
    const t1 = performance.now();
    await node.setBuckets("trainer", "out=results");
    await waitFor(
      "data to disappear",
      async () => (await node.exec("trainer", ["test", "-e", "/datasets/data/cat-001.txt"])).code !== 0,
    );
    console.log(`   annotation change → gone from the container: ${(performance.now() - t1).toFixed(0)} ms`);
    show((await node.exec("trainer", ["ls", "/datasets"])).stdout);

    step("7. restart the agent (kill -9, then start) while a loop in the container keeps reading");
    const reader = new PodLoop(pod.container.id, readerScript("/datasets/out/run-1.txt"));
    try {
      await reader.advance(5);
      const clientsBefore = await node.clients();
      node.agent!.kill("SIGKILL");
      await node.agent!.exited;
      const t2 = performance.now();
      await reader.advance(10);
      await node.startAgent();
      console.log(
        `   agent killed and started again (pid ${node.agent!.pid}) in ${(performance.now() - t2).toFixed(0)} ms`,
      );
      await reader.advance(10);
      const clientsAfter = await node.clients();
      const same = [...clientsBefore].every(([mp, pid]) => clientsAfter.get(mp) === pid);
      console.log(
        `   reads in the container: ${reader.rounds}, errors: ${reader.errors.length}; FUSE client pids ${same ? "unchanged" : "CHANGED"}: ${[...clientsAfter.values()].join(", ")}`,
      );
      if (reader.errors.length > 0 || !same)
        throw new Error(`the agent restart was visible in the pod: ${reader.errors.join("; ")}`);
    } finally {
      await reader.stop();
    }

    step("8. Events recorded for the pod (events.jsonl)");
    for (const e of await node.events())
      console.log(`   ${e.type.padEnd(7)} ${e.reason.padEnd(11)} ${e.message}`);
    const up = (await node.exec("trainer", ["cat", "/proc/1/stat"])).stdout.split(" ")[21];
    console.log(`   the container was never restarted (its init process started at tick ${up})`);
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`demo failed: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  },
);
