# guestprep-library: lib
# Shared helpers prepended to every guestprep operation script and to collect.ps1 (never run alone).
# The journal (C:\ProgramData\guestprep\journal.json) records every change with its
# previous value so rollback.ps1 can restore it.
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
# A remote session (wsmprovhost, PSRP) has no console: setting the encoding throws
# "The handle is invalid" (System.IO.IOException from Console.set_OutputEncoding), seen in
# https://github.com/dahlbyk/posh-git/issues/708 and https://github.com/Azure/iotedge/issues/794.
# Where there is a console, native programs started by Invoke-Native inherit it.
try { [Console]::OutputEncoding = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false } catch { $null = $_ }

$GuestprepDir = Join-Path -Path $env:ProgramData -ChildPath 'guestprep'
$JournalPath = Join-Path -Path $GuestprepDir -ChildPath 'journal.json'
$StatePath = Join-Path -Path $GuestprepDir -ChildPath 'state.json'

function Initialize-GuestprepDir {
    if (-not (Test-Path -Path $GuestprepDir)) {
        $null = New-Item -Path $GuestprepDir -ItemType Directory
        # SYSTEM and Administrators only: the journal and captures are not for users.
        $r = Invoke-Native -FilePath 'icacls.exe' -ArgumentList @($GuestprepDir, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F')
        if ($r.ExitCode -ne 0) { throw ('icacls ' + $GuestprepDir + ' exited ' + $r.ExitCode + ': ' + $r.StdErr.Trim()) }
    }
}

# ---------------------------------------------------------------- native programs
# Every native program runs through Invoke-Native. Never `& prog 2>$null` / `2>&1`: in
# Windows PowerShell 5.1 (and 3.0-5.0) redirecting a native program's stderr turns each
# stderr line into an ErrorRecord, and under $ErrorActionPreference = 'Stop' the first one
# terminates the script (about_Redirection; https://github.com/PowerShell/PowerShell/issues/4002,
# #3996; changed only in PowerShell 7.1+, https://github.com/MicrosoftDocs/PowerShell-Docs/issues/6466).
# A remote session also records native stderr as errors without any redirection.
# Never `exit $LASTEXITCODE`: Invoke-Native does not touch $LASTEXITCODE; callers decide
# from .ExitCode which codes they tolerate and throw otherwise.

function ConvertTo-NativeArgument {
    # The one audited quoting helper: quotes one argument so that a program parsing its
    # command line with the Microsoft C runtime rules (CommandLineToArgvW) gets it back
    # unchanged. Rules, from "Parsing C++ command-line arguments"
    # (https://learn.microsoft.com/cpp/cpp/main-function-command-line-args) and
    # https://learn.microsoft.com/windows/win32/api/shellapi/nf-shellapi-commandlinetoargvw:
    #  - space/tab separate arguments unless inside double quotes;
    #  - backslashes are literal unless they precede a double quote;
    #  - 2n backslashes + quote -> n backslashes and a delimiting quote;
    #  - 2n+1 backslashes + quote -> n backslashes and a literal quote.
    # So inside quotes: each run of backslashes before a quote (or before the closing quote)
    # is doubled, and every literal quote gets one more backslash. An empty argument is "".
    # Not for cmd.exe /c or msiexec PROPERTY=value, which parse their own way.
    param([AllowEmptyString()][string]$Value)
    if ($Value.IndexOf([char]0) -ge 0) { throw 'a native argument cannot contain a NUL character' }
    if ($Value.Length -gt 0 -and $Value.IndexOfAny([char[]]@([char]' ', [char]"`t", [char]"`n", [char]"`v", [char]'"')) -lt 0) {
        return $Value
    }
    $sb = New-Object -TypeName System.Text.StringBuilder
    $null = $sb.Append([char]'"')
    $slashes = 0
    foreach ($ch in $Value.ToCharArray()) {
        if ($ch -eq [char]'\') { $slashes++; continue }
        if ($ch -eq [char]'"') { $null = $sb.Append([char]'\', 2 * $slashes + 1) }
        elseif ($slashes -gt 0) { $null = $sb.Append([char]'\', $slashes) }
        $null = $sb.Append($ch)
        $slashes = 0
    }
    if ($slashes -gt 0) { $null = $sb.Append([char]'\', 2 * $slashes) }
    $null = $sb.Append([char]'"')
    return $sb.ToString()
}

function Join-NativeArguments {
    param([AllowEmptyCollection()][string[]]$ArgumentList)
    $parts = @()
    foreach ($a in @($ArgumentList)) { $parts += (ConvertTo-NativeArgument -Value ([string]$a)) }
    return ($parts -join ' ')
}

function Invoke-Native {
    # Runs a program and returns [pscustomobject]@{ ExitCode; StdOut; StdErr }. Never throws
    # on a non-zero exit code or on stderr output, whatever $ErrorActionPreference is; throws
    # only when the program cannot be started (not found, access denied) or on timeout.
    # Both streams are read concurrently (ReadToEndAsync, .NET 4.5: Windows Server 2012+), so
    # a child filling one pipe while we wait on the other cannot deadlock. stdin is closed at
    # once: over WinRM the child would otherwise inherit the payload stream.
    param(
        [Parameter(Mandatory = $true)][string]$FilePath,
        [AllowEmptyCollection()][string[]]$ArgumentList = @(),
        [int]$TimeoutSeconds = 0,
        [System.Text.Encoding]$Encoding = $null
    )
    $exe = $FilePath
    if ($FilePath.IndexOfAny([char[]]@([char]'\', [char]'/')) -lt 0) {
        # resolve from PATH/System32 ourselves: CreateProcess would look in the current directory first
        $cmd = @(Get-Command -Name $FilePath -CommandType Application -ErrorAction SilentlyContinue)
        if ($cmd.Count -eq 0) { throw ('program not found: ' + $FilePath) }
        $exe = [string]$cmd[0].Definition
    }
    if ($null -eq $Encoding) {
        # what the child most likely writes: the console code page it inherits, else the OEM code page
        try { $Encoding = [Console]::OutputEncoding } catch { $Encoding = $null }
        if ($null -eq $Encoding) { $Encoding = [System.Text.Encoding]::GetEncoding([System.Globalization.CultureInfo]::CurrentCulture.TextInfo.OEMCodePage) }
    }
    $psi = New-Object -TypeName System.Diagnostics.ProcessStartInfo
    $psi.FileName = $exe
    $psi.Arguments = Join-NativeArguments -ArgumentList $ArgumentList
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.StandardOutputEncoding = $Encoding
    $psi.StandardErrorEncoding = $Encoding
    $proc = New-Object -TypeName System.Diagnostics.Process
    $proc.StartInfo = $psi
    try {
        $null = $proc.Start()
    } catch {
        throw ('cannot start ' + $exe + ': ' + $_.Exception.Message)
    }
    try {
        $proc.StandardInput.Close()
        $outTask = $proc.StandardOutput.ReadToEndAsync()
        $errTask = $proc.StandardError.ReadToEndAsync()
        if ($TimeoutSeconds -gt 0) {
            if (-not $proc.WaitForExit($TimeoutSeconds * 1000)) {
                try { $proc.Kill() } catch { $null = $_ }
                throw ($FilePath + ' did not finish within ' + $TimeoutSeconds + ' s (killed)')
            }
        }
        $proc.WaitForExit()
        return [pscustomobject]@{ ExitCode = [int]$proc.ExitCode; StdOut = [string]$outTask.Result; StdErr = [string]$errTask.Result }
    } finally {
        $proc.Dispose()
    }
}

function Write-GuestprepLog {
    # Timestamped line in C:\ProgramData\guestprep\<Name>.log (first-boot tasks have no other witness).
    param([string]$Name, [string]$Message)
    Initialize-GuestprepDir
    $line = (Get-Date).ToUniversalTime().ToString('o') + ' ' + $Message + [Environment]::NewLine
    [System.IO.File]::AppendAllText((Join-Path -Path $GuestprepDir -ChildPath ($Name + '.log')), $line, (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
}

# ---------------------------------------------------------------- scheduled tasks (schtasks.exe: every Windows version we support)
function Test-GuestprepTask {
    # A missing task: schtasks /Query exits 1 and writes "ERROR: The system cannot find the file
    # specified." to stderr (schtasks query, https://learn.microsoft.com/windows-server/administration/windows-commands/schtasks-query).
    # That stderr line is exactly what killed `schtasks /Query ... 2>$null` under Stop in 5.1.
    param([string]$Name)
    $r = Invoke-Native -FilePath 'schtasks.exe' -ArgumentList @('/Query', '/TN', $Name)
    return ($r.ExitCode -eq 0)
}

function New-GuestprepStartupTask {
    # At startup, as SYSTEM: powershell.exe -File <script> <args>. The /TR command line is built
    # by the audited quoting helper (powershell.exe parses it with the C runtime rules).
    param([string]$Name, [string]$Script, [AllowEmptyCollection()][string[]]$ScriptArgs = @())
    $tr = 'powershell.exe ' + (Join-NativeArguments -ArgumentList (@('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', $Script) + @($ScriptArgs)))
    if ($tr.Length -gt 261) { throw ('task ' + $Name + ': command line longer than the 261 characters schtasks /TR accepts') }
    $r = Invoke-Native -FilePath 'schtasks.exe' -ArgumentList @('/Create', '/TN', $Name, '/SC', 'ONSTART', '/RU', 'SYSTEM', '/RL', 'HIGHEST', '/F', '/TR', $tr)
    if ($r.ExitCode -ne 0) { throw ('schtasks /Create ' + $Name + ' exited ' + $r.ExitCode + ': ' + ($r.StdErr + $r.StdOut).Trim()) }
}

function Remove-GuestprepTask {
    # $true: deleted; $false: there was no such task. Anything else throws with schtasks' words.
    param([string]$Name)
    $r = Invoke-Native -FilePath 'schtasks.exe' -ArgumentList @('/Delete', '/TN', $Name, '/F')
    if ($r.ExitCode -eq 0) { return $true }
    if (-not (Test-GuestprepTask -Name $Name)) { return $false }
    throw ('schtasks /Delete ' + $Name + ' exited ' + $r.ExitCode + ': ' + ($r.StdErr + $r.StdOut).Trim())
}

function Read-JsonFile {
    param([string]$Path)
    if (-not (Test-Path -Path $Path)) { return $null }
    return ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($Path))
}

function Write-JsonFile {
    param([string]$Path, $Value)
    # Write beside, then replace: a crash never leaves half a file.
    $tmp = $Path + '.tmp'
    [System.IO.File]::WriteAllText($tmp, (ConvertTo-Json -InputObject $Value -Depth 8), (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false))
    Move-Item -Path $tmp -Destination $Path -Force
}

function Add-JournalEntry {
    param([string]$Operation, [string]$Kind, [string]$Target, [hashtable]$Detail)
    Initialize-GuestprepDir
    $journal = Read-JsonFile -Path $JournalPath
    $entries = @()
    if ($null -ne $journal) { $entries = @($journal.entries) }
    $entry = [ordered]@{ id = $entries.Count + 1; time = (Get-Date).ToUniversalTime().ToString('o'); operation = $Operation; kind = $Kind; target = $Target; rolled_back = $false }
    foreach ($k in $Detail.Keys) { $entry[$k] = $Detail[$k] }
    $entries += New-Object -TypeName PSObject -Property $entry
    Write-JsonFile -Path $JournalPath -Value ([ordered]@{ schema = 'guestprep.windows.journal/1'; entries = $entries })
}

function Get-RegistryValueOrNull {
    param([string]$Path, [string]$Name)
    $item = Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function Set-RegistryValueJournaled {
    param([string]$Operation, [string]$Path, [string]$Name, [int]$Value)
    $before = Get-RegistryValueOrNull -Path $Path -Name $Name
    if ($before -eq $Value) { return [ordered]@{ target = ($Path + '\' + $Name); changed = $false; value = $Value } }
    Add-JournalEntry -Operation $Operation -Kind 'registry_set' -Target ($Path + '\' + $Name) -Detail @{ path = $Path; name = $Name; before = $before; after = $Value }
    if (-not (Test-Path -Path $Path)) { $null = New-Item -Path $Path -Force }
    $null = New-ItemProperty -Path $Path -Name $Name -Value $Value -PropertyType DWord -Force
    $after = Get-RegistryValueOrNull -Path $Path -Name $Name
    if ($after -ne $Value) { throw ('read back ' + $Path + '\' + $Name + ' = ' + $after + ', expected ' + $Value) }
    return [ordered]@{ target = ($Path + '\' + $Name); changed = $true; before = $before; after = $Value }
}

function Update-GuestprepState {
    param([string]$Key, $Value)
    Initialize-GuestprepDir
    $state = Read-JsonFile -Path $StatePath
    $table = [ordered]@{}
    if ($null -ne $state) { foreach ($p in $state.PSObject.Properties) { $table[$p.Name] = $p.Value } }
    $table[$Key] = $Value
    Write-JsonFile -Path $StatePath -Value $table
}

function Get-Sha256 {
    param([string]$Path)
    if (Get-Command -Name 'Get-FileHash' -ErrorAction SilentlyContinue) {
        # -LiteralPath: the ? of an ESP volume path (\\?\Volume{...}\) is not a wildcard
        try { return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash } catch { $null = $_ }
    }
    # PowerShell 3.0 has no Get-FileHash
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $stream = [System.IO.File]::OpenRead($Path)
    try { return ([System.BitConverter]::ToString($sha.ComputeHash($stream))).Replace('-', '') } finally { $stream.Dispose() }
}

$EspGptType = '{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}'

function Get-EspPartition {
    # The EFI system partition by its GPT type (Get-Partition: Windows Server 2012 and newer).
    if (-not (Get-Command -Name 'Get-Partition' -ErrorAction SilentlyContinue)) {
        throw 'Get-Partition is not available (Windows Server 2012 or newer needed)'
    }
    $parts = @(Get-Partition | Where-Object -FilterScript { [string]$_.GptType -eq $EspGptType })
    if ($parts.Count -eq 0) { throw 'no EFI system partition found' }
    return $parts[0]
}

function Get-EspRoot {
    # The ESP's volume path (\\?\Volume{...}\): reached without ever assigning a drive letter.
    param($Partition)
    $paths = @($Partition.AccessPaths | Where-Object -FilterScript { ([string]$_).StartsWith('\\?\Volume') })
    if ($paths.Count -eq 0) { throw 'the ESP has no volume path' }
    $root = [string]$paths[0]
    if (-not $root.EndsWith('\')) { $root = $root + '\' }
    return $root
}

# One Property-table value of an .msi without installing it (WindowsInstaller COM):
# install-virtio.ps1 reads the drivers MSI's version, install-qemu-ga.ps1 the agent's ProductCode.
function Get-MsiProperty {
    param([string]$Path, [string]$Name)
    $installer = New-Object -ComObject WindowsInstaller.Installer
    $db = $installer.GetType().InvokeMember('OpenDatabase', 'InvokeMethod', $null, $installer, @($Path, 0))
    $view = $db.GetType().InvokeMember('OpenView', 'InvokeMethod', $null, $db, @("SELECT Value FROM Property WHERE Property='" + $Name + "'"))
    $null = $view.GetType().InvokeMember('Execute', 'InvokeMethod', $null, $view, $null)
    $rec = $view.GetType().InvokeMember('Fetch', 'InvokeMethod', $null, $view, $null)
    if ($null -eq $rec) { return $null }
    return [string]$rec.GetType().InvokeMember('StringData', 'GetProperty', $null, $rec, @(1))
}

function Write-Result {
    param($Value)
    Write-Output (ConvertTo-Json -InputObject $Value -Depth 8 -Compress)
}
