// cf-stub stands in for the cf CLI in pcap's tests: it serves the cf CLI's
// plugin RPC service (`CliRpcCmd`, Go net/rpc over encoding/gob, on
// 127.0.0.1) with the exact method signatures and model types of
// code.cloudfoundry.org/cli (plugin/rpc/cli_rpc_server.go, plugin/plugin.go,
// plugin/models), runs a plugin binary the way cf does, and records every
// call. Only Go's standard library is used, so `go build main.go` works
// offline.
//
// Usage:
//
//	cf-stub [flags] PLUGIN install         # cf install-plugin PLUGIN
//	cf-stub [flags] PLUGIN uninstall       # cf uninstall-plugin
//	cf-stub [flags] PLUGIN COMMAND ARGS... # cf COMMAND ARGS...
//
// install runs `PLUGIN <port> SendMetadata`, then validates the metadata
// with cf's rules (actor/pluginaction/install.go GetAndValidatePlugin) and
// prints it as JSON on stdout. COMMAND runs `PLUGIN <port> COMMAND ARGS...`
// after cf's argument rewriting (-v removed everywhere; -h, --help and --h
// would show cf's help instead, which the stub reports as an error).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
)

// Types of code.cloudfoundry.org/cli/v9/plugin (plugin.go).

type VersionType struct {
	Major int
	Minor int
	Build int
}

type PluginMetadata struct {
	Name           string
	Version        VersionType
	LibraryVersion VersionType
	MinCliVersion  VersionType
	Commands       []Command
}

type Usage struct {
	Usage   string
	Options map[string]string
}

type Command struct {
	Name         string
	Alias        string
	HelpText     string
	UsageDetails Usage
}

// Types of code.cloudfoundry.org/cli/v9/plugin/models.

type Organization struct {
	OrganizationFields
}

type OrganizationFields struct {
	Guid            string
	Name            string
	QuotaDefinition QuotaFields
}

type QuotaFields struct {
	Guid                    string
	Name                    string
	MemoryLimit             int64
	InstanceMemoryLimit     int64
	RoutesLimit             int
	ServicesLimit           int
	NonBasicServicesAllowed bool
}

type Space struct {
	SpaceFields
}

type SpaceFields struct {
	Guid string
	Name string
}

// The stub's configuration: what `cf` is logged in to.
type config struct {
	loggedIn    bool
	token       string
	endpoint    string
	sslDisabled bool
	orgGuid     string
	orgName     string
	spaceGuid   string
	spaceName   string
	username    string
}

// CliRpcCmd is the service cf registers (`rpc.Server.Register`), so its
// methods are called as "CliRpcCmd.METHOD".
type CliRpcCmd struct {
	config   config
	mutex    sync.Mutex
	record   *os.File
	Metadata *PluginMetadata
}

func (cmd *CliRpcCmd) note(method string, arg interface{}) {
	cmd.mutex.Lock()
	defer cmd.mutex.Unlock()
	if cmd.record == nil {
		return
	}
	line, _ := json.Marshal(map[string]interface{}{"method": method, "arg": arg})
	cmd.record.Write(append(line, '\n'))
}

func (cmd *CliRpcCmd) IsMinCliVersion(passedVersion string, retVal *bool) error {
	cmd.note("IsMinCliVersion", passedVersion)
	*retVal = true
	return nil
}

func (cmd *CliRpcCmd) SetPluginMetadata(pluginMetadata PluginMetadata, retVal *bool) error {
	cmd.note("SetPluginMetadata", pluginMetadata)
	cmd.mutex.Lock()
	defer cmd.mutex.Unlock()
	cmd.Metadata = &pluginMetadata
	*retVal = true
	return nil
}

func (cmd *CliRpcCmd) DisableTerminalOutput(disable bool, retVal *bool) error {
	cmd.note("DisableTerminalOutput", disable)
	*retVal = true
	return nil
}

func (cmd *CliRpcCmd) CallCoreCommand(args []string, retVal *bool) error {
	cmd.note("CallCoreCommand", args)
	return errors.New("cf-stub runs no core commands")
}

func (cmd *CliRpcCmd) GetOutputAndReset(args bool, retVal *[]string) error {
	cmd.note("GetOutputAndReset", args)
	*retVal = []string{""}
	return nil
}

func (cmd *CliRpcCmd) GetCurrentOrg(args string, retVal *Organization) error {
	cmd.note("GetCurrentOrg", args)
	retVal.Name = cmd.config.orgName
	retVal.Guid = cmd.config.orgGuid
	return nil
}

func (cmd *CliRpcCmd) GetCurrentSpace(args string, retVal *Space) error {
	cmd.note("GetCurrentSpace", args)
	retVal.Name = cmd.config.spaceName
	retVal.Guid = cmd.config.spaceGuid
	return nil
}

func (cmd *CliRpcCmd) Username(args string, retVal *string) error {
	cmd.note("Username", args)
	*retVal = cmd.config.username
	return nil
}

func (cmd *CliRpcCmd) UserGuid(args string, retVal *string) error {
	cmd.note("UserGuid", args)
	*retVal = ""
	return nil
}

func (cmd *CliRpcCmd) UserEmail(args string, retVal *string) error {
	cmd.note("UserEmail", args)
	*retVal = ""
	return nil
}

func (cmd *CliRpcCmd) IsLoggedIn(args string, retVal *bool) error {
	cmd.note("IsLoggedIn", args)
	*retVal = cmd.config.loggedIn
	return nil
}

func (cmd *CliRpcCmd) IsSSLDisabled(args string, retVal *bool) error {
	cmd.note("IsSSLDisabled", args)
	*retVal = cmd.config.sslDisabled
	return nil
}

func (cmd *CliRpcCmd) HasOrganization(args string, retVal *bool) error {
	cmd.note("HasOrganization", args)
	*retVal = cmd.config.orgGuid != ""
	return nil
}

func (cmd *CliRpcCmd) HasSpace(args string, retVal *bool) error {
	cmd.note("HasSpace", args)
	*retVal = cmd.config.spaceGuid != ""
	return nil
}

func (cmd *CliRpcCmd) ApiEndpoint(args string, retVal *string) error {
	cmd.note("ApiEndpoint", args)
	*retVal = cmd.config.endpoint
	return nil
}

func (cmd *CliRpcCmd) HasAPIEndpoint(args string, retVal *bool) error {
	cmd.note("HasAPIEndpoint", args)
	*retVal = cmd.config.endpoint != ""
	return nil
}

func (cmd *CliRpcCmd) ApiVersion(args string, retVal *string) error {
	cmd.note("ApiVersion", args)
	*retVal = "3.185.0"
	return nil
}

func (cmd *CliRpcCmd) LoggregatorEndpoint(args string, retVal *string) error {
	cmd.note("LoggregatorEndpoint", args)
	*retVal = ""
	return nil
}

func (cmd *CliRpcCmd) DopplerEndpoint(args string, retVal *string) error {
	cmd.note("DopplerEndpoint", args)
	*retVal = ""
	return nil
}

// AccessToken is "bearer TOKEN" as cf returns it; logged out, cf's
// refresh fails with an error.
func (cmd *CliRpcCmd) AccessToken(args string, retVal *string) error {
	cmd.note("AccessToken", args)
	if !cmd.config.loggedIn || cmd.config.token == "" {
		return errors.New("You are not logged in. Use 'cf login' or 'cf login --sso' to log in.")
	}
	*retVal = "bearer " + cmd.config.token
	return nil
}

// Core commands (a part of cf's command list) for the conflict check; -core
// adds more (e.g. `pcap`, as RFC0048 plans).
var coreCommands = map[string]string{
	"apps": "a", "app": "", "push": "p", "ssh": "", "login": "l", "logout": "lo",
	"target": "t", "help": "h", "logs": "", "scale": "", "start": "st", "stop": "sp",
	"restart": "rs", "install-plugin": "", "uninstall-plugin": "", "plugins": "",
	"version": "", "curl": "", "events": "", "env": "e",
}

func hasCommand(name string) bool {
	_, ok := coreCommands[name]
	return name != "" && ok
}

func hasAlias(alias string) bool {
	if alias == "" {
		return false
	}
	for _, a := range coreCommands {
		if a == alias {
			return true
		}
	}
	return false
}

// validate is cf's GetAndValidatePlugin without installed plugins.
func validate(plugin *PluginMetadata) error {
	if plugin == nil || plugin.Name == "" || len(plugin.Commands) == 0 {
		return errors.New("File is not a valid cf CLI plugin binary.")
	}
	major := 1
	if plugin.LibraryVersion != (VersionType{}) {
		major = plugin.LibraryVersion.Major
	}
	if major > 1 {
		return errors.New("Plugin is invalid: the plugin library version is too new.")
	}
	names := []string{}
	aliases := []string{}
	for _, command := range plugin.Commands {
		if hasCommand(command.Name) || hasAlias(command.Name) {
			names = append(names, command.Name)
		}
		if hasAlias(command.Alias) || hasCommand(command.Alias) {
			aliases = append(aliases, command.Alias)
		}
	}
	if len(names) > 0 || len(aliases) > 0 {
		sort.Strings(names)
		sort.Strings(aliases)
		return fmt.Errorf("Plugin %s v%d.%d.%d could not be installed as it contains commands with names (%s) or aliases (%s) that are already used.",
			plugin.Name, plugin.Version.Major, plugin.Version.Minor, plugin.Version.Build,
			strings.Join(names, ", "), strings.Join(aliases, ", "))
	}
	return nil
}

// run starts the RPC server and runs `plugin <port> args...` as cf does
// (command/plugin/shared/rpc.go; util/... for commands: stdin, stdout and
// stderr are cf's own).
func run(cmd *CliRpcCmd, plugin string, args ...string) error {
	server := rpc.NewServer()
	if err := server.Register(cmd); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go server.ServeConn(conn)
		}
	}()
	port := fmt.Sprint(listener.Addr().(*net.TCPAddr).Port)
	child := exec.Command(plugin, append([]string{port}, args...)...)
	child.Stdin = os.Stdin
	child.Stdout = os.Stdout
	child.Stderr = os.Stderr
	return child.Run()
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "cf-stub: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	var cfg config
	var record, core string
	flag.BoolVar(&cfg.loggedIn, "logged-in", true, "IsLoggedIn")
	flag.StringVar(&cfg.token, "token", "", "the access token (without `bearer `)")
	flag.StringVar(&cfg.endpoint, "endpoint", "", "ApiEndpoint")
	flag.BoolVar(&cfg.sslDisabled, "skip-ssl", false, "IsSSLDisabled")
	flag.StringVar(&cfg.orgGuid, "org-guid", "", "the targeted org's GUID")
	flag.StringVar(&cfg.orgName, "org-name", "", "the targeted org's name")
	flag.StringVar(&cfg.spaceGuid, "space-guid", "", "the targeted space's GUID")
	flag.StringVar(&cfg.spaceName, "space-name", "", "the targeted space's name")
	flag.StringVar(&cfg.username, "username", "", "Username")
	flag.StringVar(&record, "record", "", "append every RPC call to this file, a JSON object a line")
	flag.StringVar(&core, "core", "", "comma-separated extra core commands")
	flag.Parse()
	if flag.NArg() < 2 {
		fail("usage: cf-stub [flags] PLUGIN install|uninstall|COMMAND ARGS...")
	}
	for _, name := range strings.Split(core, ",") {
		if name != "" {
			coreCommands[name] = ""
		}
	}
	cmd := &CliRpcCmd{config: cfg}
	if record != "" {
		file, err := os.OpenFile(record, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fail("%v", err)
		}
		defer file.Close()
		cmd.record = file
	}
	plugin, verb, args := flag.Arg(0), flag.Arg(1), flag.Args()[2:]
	switch verb {
	case "install":
		if err := run(cmd, plugin, "SendMetadata"); err != nil {
			fail("File is not a valid cf CLI plugin binary: %v", err)
		}
		if err := validate(cmd.Metadata); err != nil {
			fail("%v", err)
		}
		out, _ := json.Marshal(cmd.Metadata)
		fmt.Println(string(out))
	case "uninstall":
		if err := run(cmd, plugin, "CLI-MESSAGE-UNINSTALL"); err != nil {
			fail("uninstalling: %v", err)
		}
	default:
		// cf's rewriting: -v is cf's own (trace), -h/--help/--h mean `cf help`.
		kept := []string{verb}
		for _, arg := range args {
			switch arg {
			case "-v":
				continue
			case "-h", "--help", "--h":
				fail("cf would show `cf help %s` instead of running the plugin", verb)
			}
			kept = append(kept, arg)
		}
		if err := run(cmd, plugin, kept...); err != nil {
			// cf exits 1 when the plugin fails.
			os.Exit(1)
		}
	}
}
