package main

import (
	"fmt"
	"strings"
)

// person draws a name: first name, sometimes a middle name, last name.
func person(r *rng) (first, last, full string) {
	first, last = pick(r, firstNames), pick(r, lastNames)
	full = first + " " + last
	if r.intn(5) == 0 {
		full = first + " " + pick(r, middleNames) + " " + last
	}
	return first, last, full
}

// fakeCPR returns a number in the CPR layout ddmmyy-xxxx whose month is 13:
// no real person has it, and a check of the date part rejects it at once.
func fakeCPR(r *rng) string {
	return fmt.Sprintf("%02d13%02d-%04d", 1+r.intn(28), r.intn(100), r.intn(10000))
}

// phone returns a Danish number written "+45 dd dd dd dd".
func phone(r *rng) string {
	return fmt.Sprintf("+45 %d%d %02d %02d %02d", 2+r.intn(8), r.intn(10), r.intn(100), r.intn(100), r.intn(100))
}

// initials returns the letter part of a user name: the first letter of the
// first name and two of the last name, in ASCII lower case.
func initials(first, last string) string {
	f, l := strings.ToLower(fold(first)), strings.ToLower(fold(last))
	return f[:1] + l[:2]
}

// monthStart returns the first day of a month between fromYear and toYear.
func monthStart(r *rng, fromYear, toYear int) string {
	return fmt.Sprintf("%d-%02d-01", fromYear+r.intn(toYear-fromYear+1), 1+r.intn(12))
}
