package pop3

import "github.com/mailcluster/mailcluster/protocols"

// Commands lists the command names a Server reports to its
// Config.Observer; any other command line (unknown, malformed, too long)
// is reported as protocols.CommandOther.
var Commands = []string{
	"CAPA", "USER", "PASS", "AUTH", "STLS", "QUIT",
	"STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "RSET", "NOOP",
}

// commandNames holds Commands, for commandName.
var commandNames = func() map[string]string {
	m := make(map[string]string, len(Commands))
	for _, c := range Commands {
		m[c] = c
	}
	return m
}()

// commandName returns the name under which a command keyword (in upper
// case) is reported: the keyword itself when it is one of Commands,
// otherwise protocols.CommandOther. The result never refers to the
// client's input, so it can be kept.
func commandName(keyword string) string {
	if name, ok := commandNames[keyword]; ok {
		return name
	}
	return protocols.CommandOther
}
