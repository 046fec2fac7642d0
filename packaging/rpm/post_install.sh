# zkcoord %post: create the state directory; enable the unit on first install without starting
# it (/etc/zkcoord.toml must be edited first); restart a running daemon on upgrade.
mkdir -p /var/lib/zkcoord
chmod 0750 /var/lib/zkcoord
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    systemctl enable zkcoordd.service >/dev/null 2>&1 || :
    echo "zkcoord: edit /etc/zkcoord.toml, check it with 'zkcoordd --check-config', then 'systemctl start zkcoordd'"
else
    systemctl try-restart zkcoordd.service >/dev/null 2>&1 || :
fi
