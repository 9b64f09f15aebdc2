package targets

import (
	"bytes"
	"text/template"
)

// dovecotConfig holds what the configuration templates need.
type dovecotConfig struct {
	Dir           string // the target's directory
	Instance      string
	Hostname      string
	Domain        string
	CertFile      string
	KeyFile       string
	IMAPPort      int
	POP3Port      int
	LMTPPort      int
	SMTPPort      int
	MailLocation  string
	PostfixConf   string
	PostfixQueue  string
	PostfixData   string
	UsersFile     string
	MailboxesFile string
	MailRoot      string
	LogDir        string
	MailUser      string
	MailGroup     string
	MaxMessage    int
}

// dovecotConfTemplate is a complete dovecot.conf (no includes of the
// system configuration): loopback listeners, TLS with the run's
// certificate, passwd-file users with argon2id hashes, fsync on every
// write, the special-use mailboxes every mailnode user has.
var dovecotConfTemplate = template.Must(template.New("dovecot.conf").Parse(`# Written by mailbench for one benchmark run.
instance_name = {{.Instance}}
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
hostname = {{.Hostname}}
log_path = {{.LogDir}}/dovecot.log
info_log_path = {{.LogDir}}/dovecot.log

ssl = yes
ssl_cert = <{{.CertFile}}
ssl_key = <{{.KeyFile}}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
# The same argon2id parameters as mailnode, and like mailnode a cache of
# verified logins.
auth_cache_size = 10M
auth_cache_ttl = 5 mins
auth_cache_negative_ttl = 0
# A cache hit still verifies the password against the cached hash; do it
# in the auth worker processes (on every core) rather than in the auth
# master, as Dovecot recommends for expensive hashes.
auth_cache_verify_password_with_worker = yes

passdb {
  driver = passwd-file
  args = scheme=ARGON2ID {{.UsersFile}}
}
userdb {
  driver = passwd-file
  args = {{.UsersFile}}
  default_fields = uid={{.MailUser}} gid={{.MailGroup}} home={{.MailRoot}}/%d/%n
}

mail_location = {{.MailLocation}}
mail_fsync = always
first_valid_uid = 1
postmaster_address = postmaster@{{.Domain}}
lmtp_save_to_detail_mailbox = no

namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \Sent
    auto = create
  }
  mailbox Drafts {
    special_use = \Drafts
    auto = create
  }
  mailbox Trash {
    special_use = \Trash
    auto = create
  }
  mailbox Junk {
    special_use = \Junk
    auto = create
  }
  mailbox Archive {
    special_use = \Archive
    auto = create
  }
}

protocol imap {
  imap_max_line_length = 64k
}

# Login processes in Dovecot's documented high-performance mode.
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.IMAPPort}}
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = 2
  vsz_limit = 1G
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = {{.POP3Port}}
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 0
  process_min_avail = 2
  vsz_limit = 1G
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{.LMTPPort}}
  }
}
service imap-urlauth-login {
  inet_listener imap-urlauth {
    port = 0
  }
}
`))

// postfixMainTemplate is Postfix's main.cf: an MX for one virtual domain
// on a loopback port, every recipient handed to Dovecot over LMTP.
var postfixMainTemplate = template.Must(template.New("main.cf").Parse(`# Written by mailbench for one benchmark run.
compatibility_level = 3.6
queue_directory = {{.PostfixQueue}}
data_directory = {{.PostfixData}}
mail_owner = postfix
setgid_group = postdrop
myhostname = {{.Hostname}}
mydomain = {{.Domain}}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
maillog_file = {{.LogDir}}/postfix.log
maillog_file_prefixes = {{.LogDir}}
smtpd_banner = $myhostname ESMTP
# Clients are treated as remote MTAs: no header rewriting.
local_header_rewrite_clients =
message_size_limit = {{.MaxMessage}}
mailbox_size_limit = 0
virtual_mailbox_limit = 0

virtual_mailbox_domains = {{.Domain}}
virtual_mailbox_maps = texthash:{{.MailboxesFile}}
virtual_transport = lmtp:inet:127.0.0.1:{{.LMTPPort}}

smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
smtpd_tls_security_level = may
smtpd_tls_cert_file = {{.CertFile}}
smtpd_tls_key_file = {{.KeyFile}}
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
lmtp_tls_security_level = none
smtp_tls_security_level = none
`))

// postfixMasterCf is Postfix's master.cf: the Debian defaults that an MX
// with LMTP delivery needs, without chroot (the queue is in the run's
// directory), and the SMTP listener on its loopback port.
var postfixMasterTemplate = template.Must(template.New("master.cf").Parse(`# Written by mailbench for one benchmark run.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{{.SMTPPort}} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`))

func render(t *template.Template, c dovecotConfig) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
