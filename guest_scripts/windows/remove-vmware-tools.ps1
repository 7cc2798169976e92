# guestprep-script: remove-vmware-tools
# guestprep-output: text
# First-boot task (SYSTEM): on KVM only, uninstall VMware Tools, then remove the task.
param([string]$ProductCode)
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
$log = Join-Path -Path $env:ProgramData -ChildPath 'guestprep\remove-vmware-tools.log'
$cs = Get-CimInstance -ClassName Win32_ComputerSystem
if ([string]$cs.Manufacturer -match 'VMware') {
    Add-Content -Path $log -Value ((Get-Date).ToString('o') + ' still on VMware: waiting')
    exit 0
}
if ($ProductCode -notmatch '^\{[0-9A-Fa-f-]{36}\}$') { throw ('bad product code ' + $ProductCode) }
$proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/x', $ProductCode, '/qn', '/norestart') -Wait -PassThru
Add-Content -Path $log -Value ((Get-Date).ToString('o') + ' msiexec /x exited ' + $proc.ExitCode)
if ($proc.ExitCode -eq 0 -or $proc.ExitCode -eq 3010 -or $proc.ExitCode -eq 1605) {
    $null = & schtasks.exe '/Delete' '/TN' 'guestprep-remove-vmware-tools' '/F'
}
