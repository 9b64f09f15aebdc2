package corpus

import (
	"fmt"
	"math/rand/v2"
	"mime"
	"strings"
)

// words is the vocabulary of generated text; its letter statistics keep
// bodies about as compressible as real English mail.
var words = strings.Fields(`the of and to a in is it you that he was for on are with as I his they
be at one have this from or had by hot word but what some we can out other were all there when up
use your how said an each she which do their time if will way about many then them write would like
so these her long make thing see him two has look more day could go come did number sound no most
people my over know water than call first who may down side been now find any new work part take
get place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end put
home read hand port large spell add even land here must big high such follow act why ask men change
went light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run while press close night real life few north meeting budget
invoice report quarter review schedule project release deadline customer contract attached please
thanks regards update agenda draft proposal figures server cluster backup storage latency delivery`)

// utf8Words appear in bodies and subjects of UTF-8 messages.
var utf8Words = strings.Fields(`Grüße Übersicht Änderung Besprechung réunion déjà vu café
naïve façade Ελληνικά встреча отчёт пятница 会议 报告 明日 お疲れ様です 資料 añadir mañana
Größe straße smörgåsbord Zürich São Paulo İstanbul łódź český ☕ ✓ 🙂`)

// names are senders' display names, some of them non-ASCII.
var names = []string{
	"Alice Martin", "Bob Nguyen", "Carla Rossi", "Dmitri Ivanov", "Émilie Dubois",
	"Françoise Müller", "Gustav Øberg", "Hiroshi Tanaka", "Ingrid Søndergaard", "José Álvarez",
	"Katarzyna Wójcik", "Li Wei", "Mohammed Al-Farsi", "Nadia Петрова", "Olivia Brown",
	"Pavel Novák", "Quentin Leroy", "Rahul Sharma", "佐藤 花子", "Thomas Schäfer",
	"Ursula König", "Victor Hugo", "Wiktoria Zając", "Xavier Núñez", "Yuki Sato",
	"Zoë Clarke", "Newsletter Team", "Billing Department", "GitHub", "Calendar",
}

// domains are the senders' domains (reserved example names).
var domains = []string{"example.org", "example.net", "example.com", "mail.example.org", "lists.example.net"}

// sender is one external sender.
type sender struct {
	name, address string
}

func pickSender(rng *rand.Rand) sender {
	i := rng.IntN(len(names))
	local := strings.ToLower(strings.Fields(names[i])[0])
	if !isASCII(local) {
		local = fmt.Sprintf("user%d", i)
	}
	return sender{name: names[i], address: fmt.Sprintf("%s.%d@%s", local, rng.IntN(50), domains[rng.IntN(len(domains))])}
}

// subject draws a subject line for a new thread.
func subject(rng *rand.Rand) string {
	n := 3 + rng.IntN(6)
	parts := make([]string, 0, n)
	for j := 0; j < n; j++ {
		if rng.IntN(100) < 12 {
			parts = append(parts, utf8Words[rng.IntN(len(utf8Words))])
		} else {
			parts = append(parts, words[rng.IntN(len(words))])
		}
	}
	s := strings.Join(parts, " ")
	return strings.ToUpper(s[:1]) + s[1:]
}

// sentence returns one sentence; utf8 mixes in non-ASCII words.
func sentence(rng *rand.Rand, utf8 bool) string {
	n := 5 + rng.IntN(14)
	var b strings.Builder
	for j := 0; j < n; j++ {
		if j > 0 {
			b.WriteByte(' ')
		}
		w := words[rng.IntN(len(words))]
		if utf8 && rng.IntN(100) < 10 {
			w = utf8Words[rng.IntN(len(utf8Words))]
		}
		if j == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		b.WriteString(w)
	}
	b.WriteString([]string{".", ".", ".", "?", "!"}[rng.IntN(5)])
	return b.String()
}

// paragraph returns sentences wrapped at about 72 columns, "\n" line
// ends, and quote marks when quoted.
func paragraph(rng *rand.Rand, utf8, quoted bool) string {
	n := 1 + rng.IntN(5)
	var text []string
	for j := 0; j < n; j++ {
		text = append(text, sentence(rng, utf8))
	}
	return wrap(strings.Join(text, " "), 72, quoted)
}

// wrap breaks s into lines of at most width bytes (longer words stay
// whole) and ends every line with "\n".
func wrap(s string, width int, quoted bool) string {
	var b strings.Builder
	line := 0
	prefix := ""
	if quoted {
		prefix = "> "
	}
	for _, w := range strings.Fields(s) {
		switch {
		case line == 0:
			b.WriteString(prefix)
			line = len(prefix)
		case line+1+len(w) > width:
			b.WriteString("\n")
			b.WriteString(prefix)
			line = len(prefix)
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\n")
	return b.String()
}

// encodeHeader returns s as an RFC 2047 header value when it is not
// ASCII, folded so that no line exceeds 78 columns much.
func encodeHeader(s string) string {
	if isASCII(s) {
		return s
	}
	enc := mime.QEncoding.Encode("utf-8", s)
	return strings.ReplaceAll(enc, " =?", "\r\n =?")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
