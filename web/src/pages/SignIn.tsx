import { useState } from "preact/hooks";

import { ErrorText, Field } from "../components.js";
import { useApi } from "../context.js";
import { useAction } from "../hooks.js";

export function SignIn() {
  const api = useApi();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [apiKey, setApiKey] = useState("");
  const login = useAction();
  const key = useAction();
  return (
    <main id="main" class="signin">
      <h1>Sign in to WallWhale</h1>
      <form
        aria-labelledby="with-password"
        onSubmit={(e) => {
          e.preventDefault();
          void login.run(() => api.session.login(email, password));
        }}
      >
        <h2 id="with-password">With your e-mail and password</h2>
        <Field label="E-mail">
          <input type="email" autocomplete="username" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
        </Field>
        <Field label="Password">
          <input
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        <button type="submit" disabled={login.busy}>
          Sign in
        </button>
        <ErrorText error={login.error} />
      </form>
      <form
        aria-labelledby="with-key"
        onSubmit={(e) => {
          e.preventDefault();
          void key.run(() => api.session.useApiKey(apiKey));
        }}
      >
        <h2 id="with-key">Or with an API key</h2>
        <Field label="API key">
          <input type="password" autocomplete="off" required value={apiKey} onInput={(e) => setApiKey(e.currentTarget.value)} />
        </Field>
        <button type="submit" disabled={key.busy}>
          Use API key
        </button>
        <ErrorText error={key.error} />
      </form>
    </main>
  );
}
