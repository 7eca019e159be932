// The public API over gRPC-Web through Envoy, on the page's own origin (no CORS), with clients
// generated from the same protos as every other client.
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { AdminService } from "./gen/wallwhale/v1/admin_pb.js";
import { AuthService } from "./gen/wallwhale/v1/auth_pb.js";
import { DownloadService } from "./gen/wallwhale/v1/download_pb.js";
import { StatusService } from "./gen/wallwhale/v1/status_pb.js";
import { Session } from "./auth.js";

export interface Api {
  session: Session;
  auth: Client<typeof AuthService>;
  downloads: Client<typeof DownloadService>;
  admin: Client<typeof AdminService>;
  status: Client<typeof StatusService>;
}

export function createApi(baseUrl = globalThis.location?.origin ?? ""): Api {
  const plain = createGrpcWebTransport({ baseUrl });
  const auth = createClient(AuthService, plain);
  // Login/Refresh/Logout carry their own tokens; GetCaller and the rest carry the session's.
  let session: Session | undefined = undefined;
  const credentials: Interceptor = (next) => async (request) => {
    const header = await session!.authorization();
    if (header) request.header.set(...header);
    try {
      return await next(request);
    } catch (error) {
      // A refused call did not run: it is safe to repeat it once with renewed credentials.
      if (!request.stream && (await session!.recover(error))) {
        const renewed = await session!.authorization();
        if (renewed) request.header.set(...renewed);
        return await next(request);
      }
      throw error;
    }
  };
  const transport = createGrpcWebTransport({ baseUrl, interceptors: [credentials] });
  const authWithCredentials = createClient(AuthService, transport);
  session = new Session(() => ({
    login: auth.login,
    refresh: auth.refresh,
    logout: auth.logout,
    getCaller: authWithCredentials.getCaller,
  }));
  return {
    session,
    auth: authWithCredentials,
    downloads: createClient(DownloadService, transport),
    admin: createClient(AdminService, transport),
    status: createClient(StatusService, transport),
  };
}
