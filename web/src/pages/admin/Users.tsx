// Users: create, change role, disable/enable, reset password.
import { useState } from "preact/hooks";

import { ErrorText, Field, Pager } from "../../components.js";
import { useApi } from "../../context.js";
import * as f from "../../format.js";
import { UserRole, type User } from "../../gen/wallwhale/v1/admin_pb.js";
import { useAction, usePages } from "../../hooks.js";

const PAGE = 50;

function UserRow({ user, onChange }: { user: User; onChange: () => void }) {
  const api = useApi();
  const action = useAction();
  const [password, setPassword] = useState("");
  const update = (fields: Partial<User>, paths: string[], newPassword = "") =>
    action.run(async () => {
      await api.admin.updateUser({ user: { ...user, ...fields }, updateMask: { paths }, password: newPassword });
      onChange();
    });
  return (
    <tr>
      <th scope="row">
        {user.email}
        <div class="muted">{user.displayName}</div>
      </th>
      <td>
        <select
          aria-label={`Role of ${user.email}`}
          value={user.role}
          onChange={(e) => void update({ role: Number(e.currentTarget.value) as UserRole }, ["role"])}
        >
          <option value={UserRole.USER}>user</option>
          <option value={UserRole.ADMIN}>admin</option>
        </select>
      </td>
      <td>{user.disabled ? "disabled" : "active"}</td>
      <td>{f.time(user.lastLoginTime)}</td>
      <td class="actions">
        <button type="button" disabled={action.busy} onClick={() => void update({ disabled: !user.disabled }, ["disabled"])}>
          {user.disabled ? `Enable ${user.email}` : `Disable ${user.email}`}
        </button>
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            void update({}, [], password).then((ok) => ok && setPassword(""));
          }}
        >
          <input
            type="password"
            autocomplete="new-password"
            aria-label={`New password for ${user.email}`}
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
          <button type="submit" disabled={action.busy || !password}>
            Reset password
          </button>
        </form>
        <ErrorText error={action.error} />
      </td>
    </tr>
  );
}

export function Users() {
  const api = useApi();
  const users = usePages(async (pageToken) => {
    const r = await api.admin.listUsers({ pageSize: PAGE, pageToken });
    return { items: r.users, next: r.nextPageToken, total: r.totalSize };
  }, []);
  const create = useAction();
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [role, setRole] = useState(UserRole.USER);
  const [password, setPassword] = useState("");
  return (
    <>
      <section aria-labelledby="h-new-user">
        <h2 id="h-new-user">New user</h2>
        <form
          class="grid"
          onSubmit={(e) => {
            e.preventDefault();
            void create
              .run(() =>
                api.admin.createUser({ user: { email, displayName: name, role }, password, requestId: crypto.randomUUID() }),
              )
              .then((ok) => {
                if (!ok) return;
                setEmail("");
                setName("");
                setPassword("");
                users.reload();
              });
          }}
        >
          <Field label="E-mail">
            <input type="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </Field>
          <Field label="Display name">
            <input value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </Field>
          <Field label="Role">
            <select value={role} onChange={(e) => setRole(Number(e.currentTarget.value) as UserRole)}>
              <option value={UserRole.USER}>user</option>
              <option value={UserRole.ADMIN}>admin</option>
            </select>
          </Field>
          <Field label="Password">
            <input type="password" autocomplete="new-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </Field>
          <button type="submit" disabled={create.busy}>
            Create user
          </button>
          <ErrorText error={create.error} />
        </form>
      </section>
      <section aria-labelledby="h-users">
        <h2 id="h-users">Users</h2>
        <ErrorText error={users.error} />
        <div class="scroll" tabIndex={0} role="region" aria-label="Table, scrolls sideways">
          <table>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">State</th>
                <th scope="col">Last sign-in</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {users.value?.items.map((u) => (
                <UserRow key={u.id + String(u.updateTime?.seconds)} user={u} onChange={users.reload} />
              ))}
            </tbody>
          </table>
        </div>
        <Pager
          label="Pages of users"
          page={users.page}
          total={users.value?.total ?? 0}
          pageSize={PAGE}
          hasNext={!!users.value?.next}
          onNext={users.next}
          onPrevious={users.previous}
        />
      </section>
    </>
  );
}
