import { expect } from "chai";
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import {
  CERT_MANAGER_OVERLAY_DIR,
  MANIFESTS_DIR,
  hasKubectl,
  objectId,
  render,
  renderWithKubectl,
  renderWithoutKubectl,
  validateObject,
  type KubeObject,
} from "../../support/manifests.js";

const NAMESPACE = "dynamic-volumes";
const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "MutatingWebhookConfiguration",
  "ValidatingAdmissionPolicy",
  "ValidatingAdmissionPolicyBinding",
  "CSIDriver",
]);

const TREES = [
  ["manifests/", MANIFESTS_DIR],
  ["manifests/overlays/cert-manager/", CERT_MANAGER_OVERLAY_DIR],
  ["manifests/overlays/csi/", join(MANIFESTS_DIR, "overlays/csi")],
] as const;

describe("manifests", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  for (const [label, dir] of TREES) {
    describe(label, () => {
      let objects: readonly KubeObject[];
      before(function () {
        this.timeout(60_000);
        objects = render(dir).objects;
      });

      it("renders", () => {
        expect(objects.length).to.be.greaterThan(10);
      });

      it("validates every object against the schema of its kind, with no field the API does not define", async () => {
        const errors: string[] = [];
        for (const o of objects)
          await validateObject(o).catch((e: unknown) => errors.push((e as Error).message));
        expect(errors, errors.join("\n")).to.deep.equal([]);
      });

      it("has no two objects with the same kind, namespace and name", () => {
        const ids = objects.map(objectId);
        expect(ids.filter((id, i) => ids.indexOf(id) !== i)).to.deep.equal([]);
      });

      it(`puts every namespaced object in the ${NAMESPACE} namespace, and no cluster-scoped one in a namespace`, () => {
        const wrong = objects
          .filter((o) =>
            CLUSTER_SCOPED.has(o.kind)
              ? o.metadata.namespace !== undefined
              : o.metadata.namespace !== NAMESPACE,
          )
          .map(objectId);
        expect(wrong).to.deep.equal([]);
      });

      it("ships no Secret: the signing key is the operator's, the serving certificate the bootstrap's", () => {
        expect(objects.filter((o) => o.kind === "Secret").map(objectId)).to.deep.equal([]);
      });

      it("labels every object as part of dynamic-volumes", () => {
        const unlabelled = objects
          .filter((o) => o.metadata.labels?.["app.kubernetes.io/part-of"] !== "dynamic-volumes")
          .map(objectId);
        expect(unlabelled).to.deep.equal([]);
      });

      it("renders the same objects without kubectl as with it", function () {
        // The fallback renders in CI machines without kubectl; it must agree with kustomize itself.
        if (!hasKubectl()) {
          process.stderr.write(
            "      kubectl is not installed: the fallback cannot be compared with it here\n",
          );
          this.skip();
        }
        const viaKubectl = new Map(renderWithKubectl(dir).map((o) => [objectId(o), o]));
        const viaFallback = new Map(renderWithoutKubectl(dir).map((o) => [objectId(o), o]));
        expect([...viaFallback.keys()].sort()).to.deep.equal([...viaKubectl.keys()].sort());
        const differ = [...viaKubectl].filter(([id, o]) => !isDeepStrictEqual(o, viaFallback.get(id)));
        expect(
          differ.map(([id]) => id),
          differ
            .map(([id, o]) => `${id}\n${JSON.stringify(o)}\n${JSON.stringify(viaFallback.get(id))}`)
            .join("\n"),
        ).to.deep.equal([]);
      });
    });
  }
});

describe("validateObject", function () {
  // Rendering, dynamic imports and local servers: slow on a busy machine, whatever the mocha config.
  this.timeout(30_000);
  const deployment = (container: Record<string, unknown>): KubeObject => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "x", namespace: NAMESPACE },
    spec: {
      selector: { matchLabels: { a: "b" } },
      template: {
        metadata: { labels: { a: "b" } },
        spec: { containers: [{ name: "c", image: "i", ...container }] },
      },
    },
  });
  const certificate = (spec: Record<string, unknown>): KubeObject => ({
    apiVersion: "cert-manager.io/v1",
    kind: "Certificate",
    metadata: { name: "x", namespace: NAMESPACE },
    spec: { secretName: "s", issuerRef: { name: "i" }, ...spec },
  });

  const rejects = async (o: KubeObject, message: RegExp): Promise<void> => {
    let error: Error | undefined;
    await validateObject(o).catch((e: unknown) => (error = e as Error));
    expect(error?.message ?? "(accepted)").to.match(message);
  };

  it("[ok] a valid Deployment", async () => {
    await validateObject(deployment({ ports: [{ containerPort: 8443 }] }));
  });
  it("[ok] a valid Certificate", async () => {
    await validateObject(certificate({ dnsNames: ["a.b.svc"], duration: "8760h" }));
  });
  it("[error] an API group kubernetes-models does not know", async () => {
    await rejects({ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "x" } }, /no API group/);
  });
  it("[error] a kind kubernetes-models does not have", async () => {
    await rejects({ apiVersion: "v1", kind: "Widget", metadata: { name: "x" } }, /has no kind Widget/);
  });
  it("[error] a misspelt field", async () => {
    await rejects(
      deployment({ volumeMounts: [{ name: "v", mountPath: "/x", mountpropagation: "Bidirectional" }] }),
      /spec\.template\.spec\.containers\[0\]\.volumeMounts\[0\]\.mountpropagation: unknown field/,
    );
  });
  it("[error] a value of the wrong type", async () => {
    await rejects(deployment({ ports: [{ containerPort: "https" }] }), /containerPort must be integer/);
  });
  it("[error] a value outside an enum", async () => {
    await rejects(
      deployment({ volumeMounts: [{ name: "v", mountPath: "/x", mountPropagation: "Shared" }] }),
      /mountPropagation must be equal to one of the allowed values/,
    );
  });
  it("[error] a Certificate without secretName", async () => {
    await rejects(certificate({ secretName: undefined }), /secretName: expected a string/);
  });
  it("[error] a Certificate with a field cert-manager does not define", async () => {
    await rejects(certificate({ dnsName: ["a"] }), /\.spec\.dnsName: unknown field/);
  });
  it("[error] a Certificate duration that is not a Go duration", async () => {
    await rejects(certificate({ duration: "365d" }), /\.spec\.duration: must match/);
  });
});
