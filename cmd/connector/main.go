// Command connector is the change-data-capture sync agent: it captures
// every change of a register, keeps a bitemporal history of its business
// objects, and delivers data events to receivers, with replay.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // valid-time dates are local (Europe/Copenhagen) on any host

	"github.com/spf13/cobra"

	// Adapters register themselves.
	_ "github.com/os2sandbox/connector/capture/file"
	_ "github.com/os2sandbox/connector/capture/ldap"
	_ "github.com/os2sandbox/connector/capture/mysql"
	_ "github.com/os2sandbox/connector/capture/postgres"
	_ "github.com/os2sandbox/connector/publish/file"
	_ "github.com/os2sandbox/connector/publish/fordeler"
	_ "github.com/os2sandbox/connector/publish/kafka"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "connector:", err)
		os.Exit(exitCode(err))
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "connector",
		Short: "Change-data-capture sync agent with bitemporal history",
		Long: `connector captures every change of a register (PostgreSQL, MySQL/MariaDB, Active Directory/LDAP,
file exports), keeps its own bitemporal history of the register's business objects, and delivers
data events with complete before/after images to receivers (Kafka, a message distributor, files),
each at its own pace — and replays history into a new receiver at any time.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })
	root.AddCommand(runCmd(), checkCmd(), statusCmd(), historyCmd(), replayCmd(), snapshotCmd(), versionCmd())
	return root
}

// configFlag adds the -c flag every command but version takes.
func configFlag(c *cobra.Command, path *string) {
	c.Flags().StringVarP(path, "config", "c", "", "configuration file (YAML), required")
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprintln(c.OutOrStdout(), "connector", version)
			return nil
		},
	}
}

// noArgs is cobra.NoArgs with exit code 2.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr("%s takes no arguments, got %q", c.CommandPath(), args)
	}
	return nil
}
