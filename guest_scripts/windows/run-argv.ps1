# guestprep-script: run-argv
# guestprep-output: text
# Runs one program with arguments passed as data (JSON), never as a command line we build:
# Invoke-Native (lib.ps1, sent in front of this script) quotes each argument with the one
# audited helper and captures stdout, stderr and the exit code without PowerShell's
# redirection (which throws under 'Stop' in Windows PowerShell 5.1 as soon as stderr is written).
# Over PSRP there is no process exit code, so report_rc prints it as the last line.
$ParamsJson = [string]$args[0]
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$params = ConvertFrom-Json -InputObject $ParamsJson
$argv = @($params.argv | ForEach-Object -Process { [string]$_ })
if ($argv.Count -eq 0) { throw 'run-argv: empty argv' }
$rest = @()
if ($argv.Count -gt 1) { $rest = $argv[1..($argv.Count - 1)] }
$r = Invoke-Native -FilePath $argv[0] -ArgumentList $rest
if ($r.StdOut.Length -gt 0) { Write-Output $r.StdOut.TrimEnd([char[]]@([char]"`r", [char]"`n")) }
if ($r.StdErr.Length -gt 0) {
    # stderr stays stderr, not an error record (which would make the run fail under 'Stop')
    try { $Host.UI.WriteErrorLine($r.StdErr.TrimEnd([char[]]@([char]"`r", [char]"`n"))) } catch { $null = $_ }
}
# the program's own exit code, captured by Invoke-Native (never $LASTEXITCODE)
if ($params.PSObject.Properties['report_rc'] -and $params.report_rc) { Write-Output ('guestprep-rc=' + $r.ExitCode) } else { exit $r.ExitCode }
