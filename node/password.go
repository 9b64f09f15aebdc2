package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"
)

// maxPasswordInput is the longest password read from standard input; the
// store refuses longer ones anyway.
const maxPasswordInput = 1024

// readPassword reads a new password. From a terminal it prompts on
// prompt twice, without echo, and the two entries must match; otherwise
// it reads one line (without its line break). The password is never
// echoed or logged.
func readPassword(stdin io.Reader, prompt io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return readPasswordTerminal(int(f.Fd()), prompt)
	}
	return readPasswordLine(stdin)
}

func readPasswordTerminal(fd int, prompt io.Writer) (string, error) {
	fmt.Fprint(prompt, "New password: ")
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	defer clear(first)
	fmt.Fprint(prompt, "Repeat password: ")
	second, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	defer clear(second)
	if !bytes.Equal(first, second) {
		return "", errors.New("the passwords do not match")
	}
	return checkPasswordInput(first)
}

// readPasswordLine reads the first line of r, without buffering beyond
// what a password may need.
func readPasswordLine(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxPasswordInput+2), maxPasswordInput+2)
	line, err := br.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("password longer than %d bytes", maxPasswordInput)
		}
		return "", fmt.Errorf("read password from standard input: %w", err)
	}
	if errors.Is(err, io.EOF) && len(line) > maxPasswordInput {
		return "", fmt.Errorf("password longer than %d bytes", maxPasswordInput)
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) == 0 && errors.Is(err, io.EOF) {
		return "", errors.New("no password on standard input")
	}
	return checkPasswordInput(line)
}

func checkPasswordInput(p []byte) (string, error) {
	if len(p) == 0 {
		return "", errors.New("empty password")
	}
	if len(p) > maxPasswordInput {
		return "", fmt.Errorf("password longer than %d bytes", maxPasswordInput)
	}
	return string(p), nil
}
