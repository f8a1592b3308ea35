// (Kept beside node_modules: ES modules resolve packages from the script.)
// Drives molecule's A2A push notification configs with the official
// JavaScript client (@a2a-js/sdk), unmodified: send a task to a workspace
// nobody answers, create a webhook config with Bearer authentication on it,
// read it back (get, list), cancel the task and receive the authenticated
// notification of that move on a local receiver, then delete the config.
//
// Usage: node a2a_push.mjs BASE_URL WORKSPACE_ID TOKEN
// Prints one JSON object with what the client and the receiver saw.

import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
} from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";

const [base, workspace, token] = process.argv.slice(2);

// The receiver: every notification, with the headers it came with.
let delivered;
const notified = new Promise((resolve) => {
  delivered = resolve;
});
const receiver = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => {
    body += chunk;
  });
  req.on("end", () => {
    delivered({
      authorization: req.headers.authorization,
      token: req.headers["x-a2a-notification-token"],
      body: JSON.parse(body),
    });
    res.writeHead(200).end();
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;

const fetchImpl = (url, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${token}`);
  return fetch(url, { ...init, headers });
};
const factory = new ClientFactory(
  ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    transports: [new JsonRpcTransportFactory({ fetchImpl })],
    cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
  }),
);

const out = { hook_url: hookUrl };
const client = await factory.createFromUrl(`${base}/workspaces/${workspace}/`);
const card = await client.getAgentCard();
out.push_capability = card.capabilities.pushNotifications;
const task = await client.sendMessage({
  message: {
    messageId: randomUUID(),
    contextId: "",
    taskId: "",
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: "nobody answers this" }, metadata: undefined, filename: "", mediaType: "" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  },
  configuration: { returnImmediately: true },
});
out.task_id = task.id;

const created = await client.createTaskPushNotificationConfig({
  tenant: "",
  id: "hook-1",
  taskId: task.id,
  url: hookUrl,
  token: "tok-1",
  authentication: { scheme: "Bearer", credentials: "s3cret" },
});
out.created = [created.id, created.url, created.token, created.authentication?.scheme];
const got = await client.getTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: "hook-1" });
out.got = [got.id, got.url];
const listed = await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 0, pageToken: "" });
out.listed = listed.configs.map((c) => c.id);

const canceled = await client.cancelTask({ tenant: "", id: task.id, metadata: undefined });
out.canceled_state = TaskState[canceled.status.state];
const hit = await Promise.race([
  notified,
  // unref: a pending timer must not keep the script alive once done.
  new Promise((_, reject) => setTimeout(() => reject(new Error("no notification within 20 s")), 20_000).unref()),
]);
const sent = hit.body.task ?? hit.body;
out.notification = {
  authorization: hit.authorization,
  token: hit.token,
  task_id: sent.id,
  state: sent.status.state,
};

await client.deleteTaskPushNotificationConfig({ tenant: "", taskId: task.id, id: "hook-1" });
const after = await client.listTaskPushNotificationConfig({ tenant: "", taskId: task.id, pageSize: 0, pageToken: "" });
out.after_delete = after.configs.map((c) => c.id);
receiver.close();
console.log(JSON.stringify(out));
