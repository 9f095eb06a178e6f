import { expect } from "chai";
import { EventEmitter } from "node:events";
import {
  ConsoleOps,
  withRemedy,
  type ConsoleReconciler,
  type Session,
} from "../../../../agent/console/ops.js";
import { AppError } from "../../../../shared/errors.js";
import { createLogger } from "../../../../shared/logger.js";
import { ConsoleError, toErrorBody, type MountResult } from "../../../../shared/protocol.js";

const log = createLogger({ name: "test", level: "silent" });

const session: Session = {
  username: "alice",
  may: () => Promise.resolve(true),
  require: () => Promise.resolve(),
  progress: () => undefined,
  event: () => true,
  onEnd: () => () => undefined,
  drop: () => undefined,
};

const reconciler = {
  events: new EventEmitter(),
  statusOf: () => undefined,
  podViews: () => [],
} as unknown as ConsoleReconciler;

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("no error");
}

describe("ConsoleOps: a pod that is not here", () => {
  const source = {
    getPod: () => undefined,
    updateBuckets: () => Promise.reject(new Error("unused")),
  };

  it("[error] in a cluster: WrongNode, pointing at the pod's node", async () => {
    const ops = new ConsoleOps({ reconciler, source, nodeName: "node-1", log });
    const e = await failure(ops.handle(session, { id: 1, op: "status", namespace: "team-a", pod: "x" }));
    expect(e).to.be.instanceOf(ConsoleError);
    expect((e as ConsoleError).code).to.equal("WrongNode");
    expect((e as Error).message).to.match(/kubectl get pod -n team-a x -o wide/);
    ops.close();
  });

  it("[error] with a source that can say why (local mode): its AppError, for status and mount alike", async () => {
    const ops = new ConsoleOps({
      reconciler,
      source: {
        ...source,
        missingPod: (ns: string, name: string) => new AppError("NotFound", `no pod ${ns}/${name} in /p/pods`),
      },
      nodeName: "node-1",
      log,
    });
    for (const req of [
      { id: 1, op: "status" as const, namespace: "team-a", pod: "x" },
      { id: 2, op: "mount" as const, namespace: "team-a", pod: "x", bucket: "bucket-a" },
      { id: 3, op: "unmount" as const, namespace: "team-a", pod: "x", name: "a" },
    ]) {
      const e = await failure(ops.handle(session, req));
      expect(toErrorBody(e), req.op).to.deep.equal({
        code: "NotFound",
        message: "no pod team-a/x in /p/pods",
      });
    }
    ops.close();
  });
});

describe("withRemedy", () => {
  const result = (state: "failed" | "mounted", error?: string): MountResult => ({
    namespace: "team-a",
    pod: "web",
    mount: {
      name: "data",
      state,
      bucket: "bucket-a",
      prefix: "",
      readOnly: false,
      path: "/datasets/data",
      ...(error !== undefined ? { error } : {}),
    },
  });

  it("[ok] adds to a failed mount's error, once, how to remove the entry", () => {
    const r = withRemedy(result("failed", 'bucket "bucket-a" was not found at http://s3: create it.'));
    expect(r.mount.error).to.equal(
      `bucket "bucket-a" was not found at http://s3: create it.\nThe entry stays in the pod's buckets annotation and is retried with backoff; remove it with: dvctl umount team-a/web data`,
    );
    expect(withRemedy(r)).to.deep.equal(r);
    expect(withRemedy(result("failed")).mount.error).to.match(
      /^the mount failed\n.*dvctl umount team-a\/web data$/,
    );
  });

  it("[ok] leaves a mounted result alone", () => {
    expect(withRemedy(result("mounted"))).to.deep.equal(result("mounted"));
  });
});
