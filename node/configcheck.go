package node

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

const configCheckUsage = `
Checking a configuration:
  mailnode config check [--config FILE]
    parses and validates FILE (default /etc/mailnode/mailnode.toml)
    without starting anything, and names the line of every problem.
`

// defaultConfigFile is what "config check" reads without --config.
const defaultConfigFile = "/etc/mailnode/mailnode.toml"

// CheckConfig parses and validates a config file's contents and returns
// every problem found, each prefixed with "name:line:" where the line of
// the key at fault can be found. A nil result means the config is good.
func CheckConfig(name string, data []byte) []string {
	if len(data) > maxConfigSize {
		return []string{fmt.Sprintf("%s: larger than %d bytes", name, maxConfigSize)}
	}
	lines := keyLines(string(data))
	at := func(key string) string {
		if l, ok := lines[key]; ok {
			return fmt.Sprintf("%s:%d: ", name, l)
		}
		return name + ": "
	}
	cfg := Default()
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return []string{fmt.Sprintf("%s:%d: %s", name, perr.Position.Line, perr.Message)}
		}
		// A value of the wrong type: the decoder names the line in its
		// message.
		if m := decodeLinePattern.FindStringSubmatch(err.Error()); m != nil {
			return []string{fmt.Sprintf("%s:%s: %s", name, m[1], strings.TrimPrefix(err.Error(), "toml: "))}
		}
		return []string{fmt.Sprintf("%s: %v", name, err)}
	}
	var out []string
	undecoded := md.Undecoded()
	sort.Slice(undecoded, func(i, j int) bool { return lines[undecoded[i].String()] < lines[undecoded[j].String()] })
	for _, k := range undecoded {
		out = append(out, at(k.String())+"unknown key "+k.String())
	}
	if err := cfg.Validate(); err != nil {
		for _, msg := range validationMessages(err) {
			out = append(out, at(leadingKey(msg))+msg)
		}
	}
	return out
}

// validationMessages splits a joined validation error into its lines.
func validationMessages(err error) []string {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range u.Unwrap() {
			out = append(out, validationMessages(e)...)
		}
		return out
	}
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// decodeLinePattern finds the line the TOML decoder names in an error.
var decodeLinePattern = regexp.MustCompile(`\bline (\d+)\b`)

// leadingKeyPattern finds the dotted key a validation message starts with
// ("limits.max_connections 5: ...", "hostname: must be set").
var leadingKeyPattern = regexp.MustCompile(`^(?:config[^:]*:\s*)?([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`)

func leadingKey(msg string) string {
	m := leadingKeyPattern.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	return m[1]
}

// keyLines maps each "section.key" of a TOML text to the line that sets
// it (and each table name to its header line), by reading the lines as
// TOML lays them out: [table] and [[array]] headers, then key = value.
// Multi-line strings and arrays are skipped over coarsely: only lines
// that look like a key assignment at the start count.
func keyLines(text string) map[string]int {
	out := map[string]int{}
	table := ""
	keyRe := regexp.MustCompile(`^\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*=`)
	headerRe := regexp.MustCompile(`^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$`)
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		if m := headerRe.FindStringSubmatch(line); m != nil {
			table = m[1]
			if _, ok := out[table]; !ok {
				out[table] = n
			}
			continue
		}
		if m := keyRe.FindStringSubmatch(line); m != nil {
			key := strings.Join(strings.Fields(strings.ReplaceAll(m[1], ".", " ")), ".")
			if table != "" {
				key = table + "." + key
			}
			if _, ok := out[key]; !ok {
				out[key] = n
			}
		}
	}
	return out
}

// configCommand is "mailnode config check".
func (c CLI) configCommand(args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return fmt.Errorf("%w: config needs a subcommand: check", errUsage)
	}
	fs := newFlagSet("config check")
	file := fs.String("config", defaultConfigFile, "config file")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: config check takes no arguments (--config FILE)", errUsage)
	}
	data, _, err := readSmallFile(*file, maxConfigSize+1)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	problems := CheckConfig(*file, data)
	for _, p := range problems {
		fmt.Fprintln(c.Stdout, p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %d problem(s)", *file, len(problems))
	}
	fmt.Fprintf(c.Stdout, "%s: ok\n", *file)
	return nil
}
