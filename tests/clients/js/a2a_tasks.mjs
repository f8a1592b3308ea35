// (Kept beside node_modules: ES modules resolve packages from the script.)
// Drives molecule's A2A endpoint with the official JavaScript client
// (@a2a-js/sdk), unmodified: resolve a workspace's Agent Card, send it a
// message (answered by a real `molecule connect --exec` agent), get and list
// the task, cancel a second task the agent has not picked up, and stream a
// third.
//
// Usage: node a2a_tasks.mjs BASE_URL WORKSPACE_ID TOKEN IDLE_WORKSPACE_ID
// Prints one JSON object with what the client saw.

import { randomUUID } from "node:crypto";
import {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
} from "@a2a-js/sdk/client";
import { Role, TaskState } from "@a2a-js/sdk";

const [base, workspace, token, idle] = process.argv.slice(2);

// The bearer token on every request the client makes (card and JSON-RPC).
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

const message = (text) => ({
  messageId: randomUUID(),
  contextId: "",
  taskId: "",
  role: Role.ROLE_USER,
  parts: [{ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "" }],
  metadata: undefined,
  extensions: [],
  referenceTaskIds: [],
});

const stateName = (task) => TaskState[task.status.state];

async function errorName(call) {
  try {
    await call();
    return "accepted";
  } catch (e) {
    return e.constructor.name;
  }
}

const out = {};
const client = await factory.createFromUrl(`${base}/workspaces/${workspace}/`);
const card = await client.getAgentCard();
out.card_name = card.name;
out.protocol_version = client.protocolVersion;
// Blocking (the client's default): answered once the agent is done.
const task = await client.sendMessage({ message: message("say hello") });
out.sent_state = stateName(task);
out.task_id = task.id;
out.answer = task.artifacts.flatMap((a) => a.parts.map((p) => p.content?.value));
const got = await client.getTask({ id: task.id });
out.got_state = stateName(got);
// The request in full, as its type has it: the client serializes a
// missing `status` as "UNRECOGNIZED", which is no state.
const listed = await client.listTasks({
  tenant: "",
  contextId: "",
  status: TaskState.TASK_STATE_UNSPECIFIED,
  pageToken: "",
  statusTimestampAfter: undefined,
});
out.listed = listed.tasks.map((t) => t.id);

// A task nobody picks up: sent without waiting, then canceled.
const idleClient = await factory.createFromUrl(`${base}/workspaces/${idle}/`);
const pending = await idleClient.sendMessage({
  message: message("never answered"),
  configuration: { returnImmediately: true },
});
out.pending_state = stateName(pending);
const canceled = await idleClient.cancelTask({ id: pending.id });
out.canceled_state = stateName(canceled);
out.second_cancel = await errorName(() => idleClient.cancelTask({ id: pending.id }));
out.unknown_task = await errorName(() => idleClient.getTask({ id: randomUUID() }));
// Streamed: the task, then its moves until the agent is done.
out.streamed = [];
for await (const event of client.sendMessageStream({ message: message("stream hello") })) {
  const { $case, value } = event.payload;
  if ($case === "task") out.streamed.push(["task", stateName(value)]);
  if ($case === "statusUpdate") out.streamed.push(["status", stateName(value)]);
  if ($case === "artifactUpdate") {
    out.streamed.push(["artifact", value.artifact.parts.map((p) => p.content?.value).join("")]);
  }
}
console.log(JSON.stringify(out));
