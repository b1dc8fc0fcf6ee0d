# shellcheck shell=sh
# A box Pod's entrypoint: install the pinned host key and the one client key from the Pod's
# Secret volume, then run sshd in the foreground as the container's main process.
# Parameters (container env, never secrets): BOXFORGE_KEYS_DIR, BOXFORGE_SSH_USER.
set -eu
keys=${BOXFORGE_KEYS_DIR:-/etc/boxforge/keys}
user=${BOXFORGE_SSH_USER:-root}

sshd_bin=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
if [ ! -x "$sshd_bin" ]; then
  # Images without sshd get it from their distribution (needs the cluster's egress to its mirror).
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server >/dev/null
  elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache openssh-server >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q openssh-server >/dev/null
  else
    echo "boxforge: the image has no sshd and no known package manager" >&2
    exit 1
  fi
  sshd_bin=/usr/sbin/sshd
fi

if [ "$user" != root ] && ! id "$user" >/dev/null 2>&1; then
  useradd -m -s /bin/sh "$user" 2>/dev/null || adduser -D -s /bin/sh "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
# sshd refuses a locked account ('!') when PAM is off; '*' allows key logins only.
usermod -p '*' "$user" 2>/dev/null || true

mkdir -p /run/sshd /etc/boxforge/ssh "$home/.ssh"
install -m 600 "$keys/ssh_host_ed25519_key" /etc/boxforge/ssh/ssh_host_ed25519_key
install -m 600 "$keys/authorized_keys" "$home/.ssh/authorized_keys"
chown -R "$user" "$home/.ssh"
chmod 700 "$home/.ssh"

exec "$sshd_bin" -D -e -p 22 \
  -h /etc/boxforge/ssh/ssh_host_ed25519_key \
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
  -o PermitRootLogin=prohibit-password -o UsePAM=no \
  -o AuthorizedKeysFile=.ssh/authorized_keys
