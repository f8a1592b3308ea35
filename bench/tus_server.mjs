// The tus reference server for Node (@tus/server, the port of tusd),
// measured beside molecule: `node tus_server.mjs PORT file DIR` stores
// uploads in DIR, `node tus_server.mjs PORT s3 BUCKET` in S3 (the AWS_*
// variables name the endpoint and key). run.sh installs the packages next
// to this file; the harness uploads each file in one request (the
// creation-with-upload extension).
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";
import { S3Store } from "@tus/s3-store";

const [port, kind, target] = process.argv.slice(2);
const datastore =
  kind === "s3"
    ? new S3Store({
        partSize: 8 * 1024 * 1024,
        useTags: false,
        s3ClientConfig: {
          bucket: target,
          region: process.env.AWS_REGION,
          endpoint: process.env.AWS_ENDPOINT,
          forcePathStyle: true,
          credentials: {
            accessKeyId: process.env.AWS_ACCESS_KEY_ID,
            secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
          },
        },
      })
    : new FileStore({ directory: target });
const tus = new Server({ path: "/files", datastore });
http
  .createServer((req, res) => tus.handle(req, res))
  .listen(Number(port), "127.0.0.1");
