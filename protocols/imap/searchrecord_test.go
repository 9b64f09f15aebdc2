package imap

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// recordCorpus is a varied set of messages for comparing searches
// answered from search records with searches that read the messages.
func recordCorpus() []string {
	nested := "Content-Type: text/plain\r\n\r\ndeep nestedword\r\n"
	for i := 0; i < maxMIMEDepth+2; i++ {
		b := fmt.Sprintf("n%d", i)
		nested = "Content-Type: multipart/mixed; boundary=" + b + "\r\n\r\n--" + b + "\r\n" + nested + "\r\n--" + b + "--\r\n"
	}
	return []string{
		simpleMessage("John Smith <john@example.net>", "alice@example.org", "Hello world", "Mon, 01 Jan 2024 10:00:00 +0000",
			"Hello, world! The quick brown fox.\r\nSecond line with hello,world and TABS\tinside."),
		"From: =?UTF-8?Q?J=C3=B6hn_D=C3=B6e?= <jd@example.com>\r\nTo: alice@example.org\r\n" +
			"Subject: =?UTF-8?B?UsOpc3Vtw6kgZHUgcHJvamV0?=\r\nDate: Tue, 02 Jan 2024 11:00:00 +0100\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
			"Caf=C3=A9 cr=C3=A8me br=C3=BBl=C3=A9e, soft=\r\nbreak joined\r\n--alt\r\n" +
			"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("<p>Ünïcode <b>HTML</b> body</p>")) + "\r\n--alt--\r\n",
		"From: Latin <latin@example.com>\r\nTo: undisclosed-recipients:;\r\nCc: team: a@example.com, \"B, Bee\" <b@example.com>;\r\n" +
			"Subject: Folded\r\n  subject   with   spaces\r\nDate: not a date\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" +
			"Content-Transfer-Encoding: quoted-printable\r\n\r\nNa=EFve fa=E7ade \r\n",
		"From: fwd@example.com\r\nTo: alice@example.org\r\nSubject: Fwd: attached\r\nX-Custom: Present\r\nMessage-ID: <abc.123@example.com>\r\n" +
			"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
			"--mix\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.net\r\nSubject: Inner subject\r\nX-Inner: attached-header-value\r\n\r\n" +
			"Inner body with innerneedle.\r\n--mix\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte("binaryword hidden in an attachment")) + "\r\n--mix--\r\n",
		"From: raw8bit@example.com\r\nSubject: Grüße aus Köln\r\nDate: Wed, 03 Jan 2024 12:00:00 -0500\r\n\r\nİstanbul ÇAĞ Straße GRÜSSE\r\nnon\u00a0breaking form\ffeed vertical\vtab\r\n",
		"From: deep@example.com\r\nSubject: nested\r\nMIME-Version: 1.0\r\n" + nested,
		"Subject: no body at all\r\nFrom: empty@example.com\r\n\r\n",
		"From: Bob <bob@example.com>\r\nSubject: Re: Hello world\r\nDate: Thu, 04 Jan 2024 09:00:00 +0000\r\n" +
			"Message-ID: <reply1@example.com>\r\nIn-Reply-To: <Hello.world@example.net>\r\nReferences: <Hello.world@example.net>\r\n\r\nSounds good.\r\n",
		"From: Carol <carol@example.com>\r\nSubject: RE: [list] Hello world\r\nMessage-ID: <reply2@example.com>\r\n" +
			"References: <Hello.world@example.net> <reply1@example.com>\r\n\r\nMe too.\r\n",
		figuresMessage(),
	}
}

// figuresMessage carries a CSV attachment with more distinct words
// (nearly every line is one) than a record keeps whole.
func figuresMessage() string {
	var csv strings.Builder
	for i := 0; csv.Len() < 2*maxRecordWords; i++ {
		fmt.Fprintf(&csv, "%d,try,very,%d.%02d,2026-09-%02d\n", 10000+i*7, i*13%9000, i%100, i%28+1)
	}
	return "From: figures@example.com\r\nSubject: Figures 2026\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"fig\"\r\n\r\n--fig\r\nContent-Type: text/plain\r\n\r\nThe figures, attached.\r\n" +
		"--fig\r\nContent-Type: text/csv; name=\"figures.csv\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(csv.String())) + "\r\n--fig--\r\n"
}

// recordSearches are the criteria compared.
func recordSearches() []imap.SearchCriteria {
	hdr := func(k, v string) imap.SearchCriteria {
		return imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: k, Value: v}}}
	}
	var out []imap.SearchCriteria
	for _, w := range []string{"hello", "HELLO,WORLD", "world!", "lo wo", "o, w", "tabs\tinside", "café", "CRÈME", "softbreak",
		"soft", "ünïcode", "<b>", "naïve", "façade", "innerneedle", "binaryword", "nestedword", "deep nestedword",
		"istanbul", "i̇stanbul", "straße", "çağ", "attached.", "", " ", "no-such-word", "inner subject"} {
		out = append(out, imap.SearchCriteria{Body: []string{w}}, imap.SearchCriteria{Text: []string{w}})
	}
	for _, w := range []string{"subject", "x-inner", "attached-header-value", "example.com", "fwd: attached", "grüße",
		"non\u00a0breaking", "form\ffeed", "vertical\vtab", "non", "feed",
		",try,very,", "try,very,1", "10007,try", "2026-09-0", "2026", "figures", "try verynot", "try very"} {
		out = append(out, imap.SearchCriteria{Body: []string{w}}, imap.SearchCriteria{Text: []string{w}})
	}
	out = append(out,
		hdr("Subject", "hello"), hdr("Subject", "résumé"), hdr("Subject", "subject with spaces"), hdr("Subject", "köln"),
		hdr("From", "jöhn"), hdr("From", "jd@example.com"), hdr("From", "John Smith <john@"), hdr("To", "undisclosed"),
		hdr("Cc", "b, bee"), hdr("Cc", "team:"), hdr("X-Custom", ""), hdr("X-Missing", ""), hdr("Message-ID", "abc.123"),
		imap.SearchCriteria{SentSince: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)},
		imap.SearchCriteria{SentBefore: time.Date(2024, 1, 3, 0, 0, 0, 0, time.UTC)},
		imap.SearchCriteria{Not: []imap.SearchCriteria{{Body: []string{"hello"}}}},
		imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{{Body: []string{"café"}}, hdr("Subject", "nested")}}},
		imap.SearchCriteria{Body: []string{"hello", "fox"}, Text: []string{"john"}},
	)
	return out
}

// TestSearchRecordsAnswerAsReading compares, over a varied corpus, the
// results of SEARCH and SORT answered from search records (stored with
// the messages, cached or not, or learnt from a first read) with those
// of a server that reads every message, the reference; THREAD likewise.
func TestSearchRecordsAnswerAsReading(t *testing.T) {
	noCache := func(c *Config) { c.SearchCacheBytes = -1 }
	type server struct {
		name    string
		indexed bool
		opts    []serverOption
		// fetchFirst: FETCH every header (twice) before searching, so
		// the cache holds the header-only records FETCH keeps.
		fetchFirst bool
	}
	servers := []server{
		{"reference", false, []serverOption{noCache}, false},
		{"records", true, []serverOption{noCache}, false},
		{"records+cache", true, nil, false},
		{"learnt", false, nil, false},
		{"records+cache after FETCH", true, nil, true},
		{"learnt after FETCH", false, nil, true},
	}
	corpus := recordCorpus()
	results := make([][]string, len(servers))
	for si, sv := range servers {
		ts := newTestServer(t, sv.opts...)
		if sv.indexed {
			ts.env.Mem.SetSearchIndexer(BuildSearchRecord)
		}
		for _, m := range corpus {
			ts.deliver(t, m)
		}
		c := ts.login(t, nil)
		selectMailbox(t, c, "INBOX", false)
		if sv.fetchFirst {
			fetchHeadersTwice(t, c, len(corpus))
		}
		if sv.fetchFirst && sv.indexed {
			// A header search reads the records the store keeps; they
			// replace the header-only ones FETCH left in the cache.
			crit := imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "hello"}}}
			if _, err := c.UIDSearch(&crit, nil).Wait(); err != nil {
				t.Fatalf("%s: search: %v", sv.name, err)
			}
			if n := headerOnlyRecords(ts.srv.recCache); n > 0 {
				t.Errorf("%s: %d header-only records left after a search", sv.name, n)
			}
		}
		for pass := 0; pass < 2; pass++ { // the second pass meets cached records
			var got []string
			for i, crit := range recordSearches() {
				data, err := c.UIDSearch(&crit, &imap.SearchOptions{ReturnAll: true}).Wait()
				if err != nil {
					t.Fatalf("%s: search %d %+v: %v", sv.name, i, crit, err)
				}
				got = append(got, fmt.Sprint(data.AllUIDs()))
			}
			for _, key := range []imapclient.SortKey{imapclient.SortKeyDate, imapclient.SortKeySubject, imapclient.SortKeyFrom} {
				uids, err := c.UIDSort(&imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{}, SortCriteria: []imapclient.SortCriterion{{Key: key}}}).Wait()
				if err != nil {
					t.Fatalf("%s: sort %s: %v", sv.name, key, err)
				}
				got = append(got, fmt.Sprint(uids))
			}
			for _, alg := range []imap.ThreadAlgorithm{imap.ThreadOrderedSubject, imap.ThreadReferences} {
				threads, err := c.UIDThread(&imapclient.ThreadOptions{Algorithm: alg, SearchCriteria: &imap.SearchCriteria{}}).Wait()
				if err != nil {
					t.Fatalf("%s: thread %s: %v", sv.name, alg, err)
				}
				got = append(got, fmt.Sprintf("%+v", threads))
			}
			if pass == 0 {
				results[si] = got
			} else if !slices.Equal(got, results[si]) {
				t.Errorf("%s: second pass differs from the first", sv.name)
			}
		}
	}
	searches := recordSearches()
	for si := 1; si < len(servers); si++ {
		for i, want := range results[0] {
			if got := results[si][i]; got != want {
				what := "sort"
				if i < len(searches) {
					what = fmt.Sprintf("%+v", searches[i])
				}
				t.Errorf("%s: %s: got %s, reference %s", servers[si].name, what, got, want)
			}
		}
	}
	// The reference finds something for most keys, so the comparison
	// means something.
	empty := 0
	for _, r := range results[0] {
		if r == "[]" {
			empty++
		}
	}
	if empty > len(results[0])/3 {
		t.Errorf("%d of %d reference results are empty: %s", empty, len(results[0]), strings.Join(results[0], " "))
	}
}

// TestSearchBodyTextPartsOnly: BODY and TEXT search the text/* and
// message/* parts (and parts without Content-Type, which are
// text/plain), decoded, and never the content of other parts (images,
// PDF, archives), whether the server reads the message or its record.
func TestSearchBodyTextPartsOnly(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	attach := func(intro, ctype, content string) string {
		return "From: a@example.com\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\n" + intro + "\r\n" +
			"--m\r\n" + ctype + "Content-Disposition: attachment; filename=\"f\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			b64(content) + "\r\n--m--\r\n"
	}
	corpus := []string{
		attach("See the picture.", "Content-Type: image/png\r\n", "\x89PNG pngword inside an image"),
		attach("See the file.", "Content-Type: text/plain; charset=utf-8\r\n", "attachedtextword in a text file"),
		attach("No type.", "", "defaultword in a part without Content-Type"),
		attach("A document.", "Content-Type: application/pdf\r\n", "%PDF-1.4 pdfword"),
	}
	want := map[string]string{"pngword": "[]", "attachedtextword": "[2]", "defaultword": "[3]", "pdfword": "[]", "file.": "[2]"}
	for _, indexed := range []bool{false, true} {
		ts := newTestServer(t, func(c *Config) { c.SearchCacheBytes = -1 })
		if indexed {
			ts.env.Mem.SetSearchIndexer(BuildSearchRecord)
		}
		for _, m := range corpus {
			ts.deliver(t, m)
		}
		c := ts.login(t, nil)
		selectMailbox(t, c, "INBOX", false)
		for needle, uids := range want {
			for _, crit := range []imap.SearchCriteria{{Body: []string{needle}}, {Text: []string{needle}}} {
				data, err := c.UIDSearch(&crit, &imap.SearchOptions{ReturnAll: true}).Wait()
				if err != nil {
					t.Fatalf("records %v: search %+v: %v", indexed, crit, err)
				}
				if got := fmt.Sprint(data.AllUIDs()); got != uids {
					t.Errorf("records %v: search %+v: got %s, want %s", indexed, crit, got, uids)
				}
			}
		}
	}
}

// fetchHeadersTwice fetches the header section and envelope of messages
// 1..n twice (the second time from the record cache) and checks that
// both answers are the same.
func fetchHeadersTwice(t *testing.T, c *imapclient.Client, n int) {
	t.Helper()
	var set imap.SeqSet
	set.AddRange(1, uint32(n))
	opts := &imap.FetchOptions{UID: true, Envelope: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}}}
	var first []string
	for round := 0; round < 2; round++ {
		msgs, err := c.Fetch(set, opts).Collect()
		if err != nil {
			t.Fatalf("fetch headers: %v", err)
		}
		if len(msgs) != n {
			t.Fatalf("fetch headers: %d messages, want %d", len(msgs), n)
		}
		var got []string
		for _, m := range msgs {
			if len(m.BodySection) != 1 || len(m.BodySection[0].Bytes) == 0 {
				t.Fatalf("fetch headers: UID %d: no header section", m.UID)
			}
			got = append(got, fmt.Sprintf("%d %q %+v", m.UID, m.BodySection[0].Bytes, m.Envelope))
		}
		if round == 1 && !slices.Equal(got, first) {
			t.Errorf("headers fetched from the cache differ:\n%v\nfirst:\n%v", got, first)
		}
		first = got
	}
}

// headerOnlyRecords counts the header-only records in a cache.
func headerOnlyRecords(c *recordCache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, el := range c.items {
		if el.Value.(*recordEntry).rec.headerOnly {
			n++
		}
	}
	return n
}

// TestSearchRecordDecoding checks that a record round-trips and that
// damaged or foreign bytes are not taken for a record.
func TestSearchRecordDecoding(t *testing.T) {
	msg := []byte("Subject: Hi There\r\n\r\nBody Words here\r\nbody WORDS\r\n")
	r := openSearchRecord(BuildSearchRecord(msg))
	if r == nil || string(r.header) != "Subject: Hi There\r\n\r\n" || r.noWords {
		t.Fatalf("record %+v", r)
	}
	if r.body != "body\nwords\nhere\n" { // distinct, in the order first seen
		t.Fatalf("body words %q", r.body)
	}
	if found, ok := r.contains("ody", false); !found || !ok {
		t.Error("word fragment not found")
	}
	if found, ok := r.contains("there", false); found || !ok {
		t.Error("header word found by BODY")
	}
	if found, ok := r.contains("there", true); !found || !ok {
		t.Error("header word not found by TEXT")
	}
	if found, ok := r.contains("body here", false); found || ok {
		t.Error("a needle with white space decided by the record")
	}
	if found, ok := r.contains("body nothere", false); found || !ok {
		t.Error("a needle with a missing word not ruled out")
	}
	rec := BuildSearchRecord(msg)
	for _, bad := range [][]byte{nil, {2, 0}, rec[:len(rec)-1], append(slices.Clone(rec), 0)} {
		if openSearchRecord(bad) != nil {
			t.Errorf("%q opened as a record", bad)
		}
	}
	big := []byte("Subject: big\r\n\r\n")
	for i := 0; len(big) < 3*maxRecordWords; i++ {
		big = append(append(big, letters(i)...), ' ')
	}
	if r := openSearchRecord(BuildSearchRecord(big)); r == nil || !r.noWords || r.body != "" {
		t.Fatalf("oversized record keeps words: %v", r != nil && !r.noWords)
	}

	// Too many words with digits in them (a table of figures): the
	// record keeps them without their digits, and answers needles
	// without digits only.
	// Words seen before the bound is passed are kept too (earlyword,
	// and 1xtwo2 as xtwo), as well as those after it (lateword).
	table := []byte("Subject: figures\r\n\r\nearlyword 1xtwo2\r\n")
	for i := 0; len(table) < 3*maxRecordWords; i++ {
		table = fmt.Appendf(table, "%d,try,very,%d.%02d,2026-09-%02d\r\n", 10000+i*7, i*13%9000, i%100, i%28+1)
	}
	table = append(table, "lateword\r\n"...)
	r = openSearchRecord(BuildSearchRecord(table))
	if r == nil || r.noWords || !r.digitFree {
		t.Fatalf("table of figures: record %v, want one of words without digits", r != nil && !r.noWords)
	}
	for _, c := range []struct {
		needle       string
		found, known bool
	}{
		{"try", true, true}, {",try,very,", true, true}, {"ry,ve", true, true}, {".", true, true},
		{"none", false, true}, {"try,none", false, true},
		{"10007", false, false}, {"7,try", false, false}, {"2026-09-01", false, false},
		{"try nothere", false, true}, {"try very", false, false},
		{"earlyword", true, true}, {"xtwo", true, true}, {"lateword", true, true}, {"1xtwo2", false, false},
	} {
		found, known := r.contains(c.needle, false)
		if found != c.found || known != c.known {
			t.Errorf("contains(%q) = %v, %v; want %v, %v", c.needle, found, known, c.found, c.known)
		}
	}
	rec = BuildSearchRecord(table)
	if rec[0] != searchRecordDigitFree || len(rec) > 2*maxRecordWords {
		t.Fatalf("record version %d, %d bytes", rec[0], len(rec))
	}
}

// letters spells i in base 26 with the letters a to z: words without
// digits, all distinct.
func letters(i int) []byte {
	w := []byte{byte('a' + i%26)}
	for i /= 26; i > 0; i /= 26 {
		w = append(w, byte('a'+i%26))
	}
	return w
}

// TestWordSet checks the distinct words kept, in the order first seen,
// past several growths of the table.
func TestWordSet(t *testing.T) {
	var s wordSet
	var want []byte
	for round := 0; round < 3; round++ {
		for i := 0; i < 20000; i++ {
			w := fmt.Appendf(nil, "w%x", i*7919%20000)
			if s.add(w) != (round == 0) {
				t.Fatalf("round %d: add(%s) reported new %v", round, w, round != 0)
			}
			if round == 0 {
				want = append(append(want, w...), '\n')
			}
		}
	}
	if !bytes.Equal(s.words, want) || s.n != 20000 {
		t.Fatalf("%d words kept, want 20000 in the order added", s.n)
	}
	// A word that is a prefix of another is its own word.
	s.reset()
	for _, w := range []string{"abc", "ab", "abc", "abcd", "ab"} {
		s.add([]byte(w))
	}
	if string(s.words) != "abc\nab\nabcd\n" {
		t.Fatalf("words %q", s.words)
	}
}

// FuzzOpenSearchRecord: no input makes the decoder fail other than by
// returning nil.
func FuzzOpenSearchRecord(f *testing.F) {
	f.Add(BuildSearchRecord([]byte("Subject: x\r\n\r\nbody\r\n")))
	f.Add([]byte{1, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r := openSearchRecord(b); r != nil {
			r.contains("x y", true)
		}
	})
}

// headerSectionLists are field lists FETCH asks of a header section:
// HEADER.FIELDS, then HEADER.FIELDS.NOT.
var headerSectionLists = [][2][]string{
	{nil, nil},
	{{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Content-Type"}, nil},
	{{"subject", "FROM", "x-custom", "X-Inner", "no-such-field"}, nil},
	{{"References", "In-Reply-To", "Reply-To", "List-Post"}, nil},
	{nil, {"Received", "subject", "X-CUSTOM", "dkim-signature"}},
	{{"From", "Subject"}, {"Subject"}},
	{{"Ünïcode", "x\u00e9"}, {"\u212a-header"}},
	{{"\u212a-header", "\u017fubject"}, nil}, // Kelvin sign and long s: lower-cased as the library does
}

func headerSectionInputs() []string {
	out := []string{
		"From: a@example.com\r\nSubject: one\r\nSubject: two\r\nX-Custom: Present\r\n\r\n",
		"Received: from x\r\n by y;\r\n Mon, 1 Jan 2024 00:00:00 +0000\r\nDKIM-Signature: v=1;\r\n\tb=abc\r\nsubject: lower\r\n\r\n",
		"no colon here\r\nFrom: a@example.com\r\n\r\n",
		"From: a@example.com\r\n",
		"X\u00e9: latin\r\nFrom: b@example.com\r\n\r\n",
		"K-Header: kelvin\r\nSubject: s\r\n\r\n",
		"\r\n",
		"",
	}
	for _, m := range recordCorpus() {
		out = append(out, string(m[:schema.HeaderLength([]byte(m))]))
	}
	return out
}

// The header sections FETCH answers from a record are the bytes
// imapserver.ExtractBodySection writes for them, once the lines that
// stop its parser are left out (withoutBrokenHeaderLines).
func TestHeaderSectionAsExtracted(t *testing.T) {
	for _, hdr := range headerSectionInputs() {
		for _, l := range headerSectionLists {
			checkHeaderSection(t, []byte(hdr), l[0], l[1])
		}
	}
}

func checkHeaderSection(t *testing.T, hdr []byte, fields, not []string) {
	t.Helper()
	r := &searchRecord{header: hdr}
	got, ok := r.headerSection(fields, not)
	want := imapserver.ExtractBodySection(bytes.NewReader(withoutBrokenHeaderLines(hdr)), &imap.FetchItemBodySection{
		Specifier: imap.PartSpecifierHeader, HeaderFields: fields, HeaderFieldsNot: not})
	if ok && !bytes.Equal(got, want) {
		t.Errorf("header %q, fields %q not %q:\n got %q\nwant %q", hdr, fields, not, got, want)
	}
	if !ok && want != nil {
		t.Errorf("header %q: not answered, but ExtractBodySection gives %q", hdr, want)
	}
	// A second answer from the parsed header is the same.
	if again, ok2 := r.headerSection(fields, not); ok2 != ok || !bytes.Equal(again, got) {
		t.Errorf("header %q: second answer %q, first %q", hdr, again, got)
	}
}

func FuzzHeaderSection(f *testing.F) {
	for _, hdr := range headerSectionInputs() {
		f.Add([]byte(hdr), "From,Subject", "")
		f.Add([]byte(hdr), "", "Received")
	}
	f.Fuzz(func(t *testing.T, hdr []byte, fields, not string) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, ",")
		}
		checkHeaderSection(t, hdr, split(fields), split(not))
	})
}
